/* The version macros of ioalloc.h and ioa_version() of the shared library
 * this program is linked with: the library reports the version of the
 * header, and the build's version (ioalloc.pc, the CMake package, the
 * library's file name) is the header's. */
#include "check.h"

#include "ioalloc.h"

int main(void)
{
	check_start("test_version");
	CHECK_EQ(IOA_VERSION,
		 IOA_VERSION_MAJOR * 10000 + IOA_VERSION_MINOR * 100 + IOA_VERSION_PATCH);
	CHECK(IOA_VERSION_MINOR < 100 && IOA_VERSION_PATCH < 100);
	CHECK_EQ(ioa_version(), IOA_VERSION);
	CHECK_EQ(IOA_VERSION_MAJOR, IOA_PROJECT_VERSION_MAJOR);
	CHECK_EQ(IOA_VERSION_MINOR, IOA_PROJECT_VERSION_MINOR);
	CHECK_EQ(IOA_VERSION_PATCH, IOA_PROJECT_VERSION_PATCH);
	return check_done();
}
