# Installing sessiond: its CMake package and its Debian packages
# (docs/OPERATIONS.md, "Packages"). Included by the root CMakeLists.txt after
# every module, whose own install() rules sit beside their targets. Two
# install components, one .deb each:
#   server  sessiond, sessionctl, the systemd unit and sysusers file, the
#           bash completion, the example config          -> sessiond
#   dev     libsessiond_client.a and the protos' static libraries, their
#           headers, the .proto files, the CMake package  -> libsessiond-client-dev
# `cmake --install <build> --prefix <dir> [--component server|dev]` installs
# them by hand; `cpack --config <build>/CPackConfig.cmake` builds the .debs.
include(CMakePackageConfigHelpers)

# --- find_package(sessiond): sessiond::client (cmake/sessiondConfig.cmake.in).
set(SESSIOND_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/sessiond)
set(SESSIOND_INSTALL_PROTODIR ${CMAKE_INSTALL_DATADIR}/sessiond/proto)
set(SESSIOND_PACKAGING_DIR ${CMAKE_BINARY_DIR}/packaging)
set_target_properties(sessiond_client PROPERTIES EXPORT_NAME client)
set_target_properties(sessiond_grpc PROPERTIES EXPORT_NAME grpc)
set_target_properties(sessiond_proto PROPERTIES EXPORT_NAME proto)
install(EXPORT sessiondTargets NAMESPACE sessiond::
  DESTINATION ${SESSIOND_INSTALL_CMAKEDIR} COMPONENT dev)
configure_package_config_file(
  ${CMAKE_CURRENT_LIST_DIR}/sessiondConfig.cmake.in
  ${SESSIOND_PACKAGING_DIR}/sessiondConfig.cmake
  INSTALL_DESTINATION ${SESSIOND_INSTALL_CMAKEDIR}
  PATH_VARS SESSIOND_INSTALL_PROTODIR)
# Before 1.0 a minor version may change the API: 0.1.x only for 0.1.
write_basic_package_version_file(
  ${SESSIOND_PACKAGING_DIR}/sessiondConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${SESSIOND_PACKAGING_DIR}/sessiondConfig.cmake
              ${SESSIOND_PACKAGING_DIR}/sessiondConfigVersion.cmake
  DESTINATION ${SESSIOND_INSTALL_CMAKEDIR} COMPONENT dev)

# --- What the daemon needs around it (deploy/systemd/).
if(TARGET sessiond)
  # The unit's ExecStart names the binary where this install puts it
  # (/usr/bin in the .deb); deploy/systemd/sessiond.service says
  # /usr/local/bin, the prefix of a plain `cmake --install`.
  install(CODE "set(sessiond_unit_source
    \"${CMAKE_CURRENT_SOURCE_DIR}/deploy/systemd/sessiond.service\")
    set(sessiond_unit_bindir \"${CMAKE_INSTALL_BINDIR}\")"
    COMPONENT server)
  install(CODE [[
    file(READ "${sessiond_unit_source}" sessiond_unit)
    set(sessiond_exec "ExecStart=/usr/local/bin/sessiond ")
    string(FIND "${sessiond_unit}" "${sessiond_exec}" sessiond_at)
    if(sessiond_at EQUAL -1)
      message(FATAL_ERROR "${sessiond_unit_source} has no '${sessiond_exec}'")
    endif()
    string(REPLACE "${sessiond_exec}"
      "ExecStart=${CMAKE_INSTALL_PREFIX}/${sessiond_unit_bindir}/sessiond "
      sessiond_unit "${sessiond_unit}")
    set(sessiond_unit_file
      "${CMAKE_INSTALL_PREFIX}/lib/systemd/system/sessiond.service")
    message(STATUS "Installing: $ENV{DESTDIR}${sessiond_unit_file}")
    file(WRITE "$ENV{DESTDIR}${sessiond_unit_file}" "${sessiond_unit}")
    list(APPEND CMAKE_INSTALL_MANIFEST_FILES "${sessiond_unit_file}")
  ]] COMPONENT server)
  install(FILES deploy/systemd/sessiond.sysusers
    DESTINATION lib/sysusers.d RENAME sessiond.conf COMPONENT server)
  install(FILES deploy/systemd/sessiond.toml
    DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples COMPONENT server)
endif()

# --- The .debs (CPack's DEB generator).
set(SESSIOND_DEB_MAINTAINER "sessiond maintainers" CACHE STRING
  "Maintainer field of the .deb packages (\"Name <email>\")")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME sessiond)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT ${SESSIOND_DEB_MAINTAINER})
# The packages install under /usr. DESTDIR staging: the install scripts see
# the real prefix (the unit's ExecStart above), and nothing an install rule
# writes can land outside the staging directory.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_GROUPING IGNORE)
if(TARGET sessiond)
  set(CPACK_COMPONENTS_ALL server dev)
else()
  set(CPACK_COMPONENTS_ALL dev)  # SESSIOND_CLIENT_ONLY
endif()
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # <name>_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_SERVER_PACKAGE_NAME sessiond)
set(CPACK_DEBIAN_SERVER_PACKAGE_SECTION net)
# Descriptions: the first line is the package's synopsis.
set(CPACK_COMPONENT_SERVER_DESCRIPTION
  "session store that cannot log everybody out
sessiond stores login sessions for application servers over gRPC, as a
Raft cluster of 3 or 5 nodes or as a single node. This package has the
daemon (sessiond, with its systemd unit, not enabled), the operators' CLI
(sessionctl) and its bash completion.")
# Debian 12's library packages the binaries link (libgrpc++1.51,
# libprotobuf32, libabsl20220623, ...; not librocksdb7.8: Debian's CMake
# package links RocksDB statically), found by dpkg-shlibdeps; the same list
# by hand where dpkg-dev is not installed.
find_program(SESSIOND_DPKG_SHLIBDEPS dpkg-shlibdeps)
if(SESSIOND_DPKG_SHLIBDEPS)
  set(CPACK_DEBIAN_SERVER_PACKAGE_SHLIBDEPS ON)
else()
  set(CPACK_DEBIAN_SERVER_PACKAGE_DEPENDS
    "libabsl20220623, libbz2-1.0, libc6, libcpp-httplib0.11, libfmt9, \
libgcc-s1, libgrpc++1.51, libgrpc29, liblz4-1, libprotobuf32, libsnappy1v5, \
libspdlog1.10-fmt9, libssl3, libstdc++6, libsystemd0, libzstd1, zlib1g")
  if(SESSIOND_WITH_JEMALLOC)
    string(APPEND CPACK_DEBIAN_SERVER_PACKAGE_DEPENDS ", libjemalloc2")
  endif()
endif()
set(CPACK_DEBIAN_SERVER_PACKAGE_CONTROL_EXTRA
  ${CMAKE_CURRENT_LIST_DIR}/debian/postinst
  ${CMAKE_CURRENT_LIST_DIR}/debian/postrm)

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libsessiond-client-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_COMPONENT_DEV_DESCRIPTION
  "C++ client library of sessiond (static) and its protos
The client of a sessiond cluster (sessiond::client for CMake's
find_package(sessiond); #include <sessiond/client/session_client.h>), the
generated protobuf and gRPC code it uses, and the .proto files of the API.")
# The static libraries are built against these exact ABIs: protobuf's
# generated code checks its version, Abseil's inline namespace is
# lts_20220623.
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
  "libgrpc++-dev (>= 1.51), libgrpc++-dev (<< 1.52), \
libprotobuf-dev (>= 3.21), libprotobuf-dev (<< 3.22), \
libabsl-dev (>= 20220623), libabsl-dev (<< 20220624)")
set(CPACK_DEBIAN_DEV_PACKAGE_RECOMMENDS "cmake, protobuf-compiler")

set(CPACK_SOURCE_GENERATOR TGZ)
set(CPACK_SOURCE_IGNORE_FILES "/\\\\.git/" "/build[^/]*/" "__pycache__")
include(CPack)
