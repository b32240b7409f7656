# A Debian package of everything `cmake --install` installs: `cpack -G DEB` in the build folder
# (or the `package` target) writes nnpar_<version>_<arch>.deb. It installs under /usr:
# /usr/bin/nnpar, the plugins in /usr/lib/nnpar/plugins (where /usr/bin/nnpar looks first),
# libnnpar_core and libnnpar_comm_mpi in /usr/lib, the headers in /usr/include/nnpar and the
# CMake package in /usr/lib/cmake/nnpar, so find_package(nnpar) works with no prefix path.
# tests/deb_test.sh builds it and checks the listing, the fields and the Depends below.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME nnpar)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "nnpar maintainers <nnpar@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "compare data, pipeline and hybrid parallel training of one MLP, with a plugin SDK")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION science)
# The Debian 12 packages of the shared libraries bin/nnpar and the CPU plugins link (ldd), plus
# openmpi-bin: multi-rank strategies start themselves under its mpirun. Listed by hand rather
# than by dpkg-shlibdeps so the package builds without dpkg-dev; deb_test.sh checks this list
# against ldd of the packaged files, so a new library dependency fails the test, not a user.
set(NNPAR_DEB_DEPENDS
  libc6 libstdc++6 libgcc-s1 libgomp1 zlib1g libboost-filesystem1.74.0 libopenmpi3 openmpi-bin
  libpng16-16 libcpp-httplib0.11 libtomlplusplus3)
list(JOIN NNPAR_DEB_DEPENDS ", " CPACK_DEBIAN_PACKAGE_DEPENDS)
# `nnpar report` runs share/nnpar/nnpar_report.py with matplotlib.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "python3, python3-matplotlib, python3-numpy")
# Building a plugin against /usr/include/nnpar: a compiler, CMake, and MPI's headers, which
# find_package(nnpar) looks for. The GPU plugins (a CUDA build) need the NVIDIA driver and NCCL,
# which are not in Debian main; without them those plugins show as broken in list-plugins.
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "g++, cmake, libopenmpi-dev")
if(NNPAR_HAVE_NCCL)
  string(APPEND CPACK_DEBIAN_PACKAGE_SUGGESTS ", libnccl2")
endif()
include(CPack)
