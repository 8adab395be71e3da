// SqliteStore's schema: the tables, their version (PRAGMA user_version) and the migrations
// that bring an older file up to date. Internal header.
#pragma once

#include "db.hpp"

namespace admit::sqlite_store {

/**
 * Checks the file's schema version and migrates an older file (version 0: new or empty) to
 * SqliteStore::kSchemaVersion, in one BEGIN IMMEDIATE transaction.
 * @throws IncompatibleSchema for a newer file (left untouched); StoreUnavailable.
 */
void migrate(Db& db);

}  // namespace admit::sqlite_store
