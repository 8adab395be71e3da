# Runs at install time (cmake --install, cpack): installs admitd's systemd unit and its config,
# placed by the install-time prefix the way GNUInstallDirs places them: the prefix /usr (the
# .deb) gives /usr/lib/systemd/system/admitd.service and /etc/admit/admitd.yaml, any other
# prefix P gives P/lib/systemd/system/admitd.service and P/etc/admit/admitd.yaml. The unit's
# ExecStart names that admitd and that config. An existing admitd.yaml is kept (it may have
# been edited); the .deb marks it as a conffile.
# Set by cmake/install.cmake: ADMIT_PACKAGING_DIR, ADMIT_SAMPLE_CONFIG, ADMIT_STAGING_DIR,
# ADMIT_INSTALL_BINDIR.
string(REGEX REPLACE "/+$" "" _prefix "${CMAKE_INSTALL_PREFIX}")
if(_prefix STREQUAL "/usr" OR _prefix STREQUAL "")
  set(_sysconfdir "/etc")
else()
  set(_sysconfdir "${_prefix}/etc")
endif()
if(IS_ABSOLUTE "${ADMIT_INSTALL_BINDIR}")
  set(ADMITD_BINARY "${ADMIT_INSTALL_BINDIR}/admitd")
else()
  set(ADMITD_BINARY "${_prefix}/${ADMIT_INSTALL_BINDIR}/admitd")
endif()
set(ADMITD_CONFIG "${_sysconfdir}/admit/admitd.yaml")

configure_file("${ADMIT_PACKAGING_DIR}/admitd.service.in"
               "${ADMIT_STAGING_DIR}/unit/admitd.service" @ONLY)
file(INSTALL DESTINATION "${_prefix}/lib/systemd/system" TYPE FILE
     FILES "${ADMIT_STAGING_DIR}/unit/admitd.service")

if(EXISTS "$ENV{DESTDIR}${ADMITD_CONFIG}")
  message(STATUS "Keeping: $ENV{DESTDIR}${ADMITD_CONFIG}")
else()
  file(INSTALL DESTINATION "${_sysconfdir}/admit" TYPE FILE RENAME admitd.yaml
       FILES "${ADMIT_SAMPLE_CONFIG}")
endif()
