#include "admit/store/store.hpp"

// The Store interface is header-only; this unit anchors its vtable.
namespace admit {}  // namespace admit
