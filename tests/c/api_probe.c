/*
 * A minimal VFIO client: opens the hard-coded kernel paths and asks the container for its API
 * version and extensions. Built dynamically and with -static by the launcher tests, to show that
 * unmodified programs of either kind see our nodes as the system's own.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define VFIO_GET_API_VERSION _IO(';', 100)
#define VFIO_CHECK_EXTENSION _IO(';', 101)

int main(void)
{
	int fd = open("/dev/vfio/vfio", O_RDWR);
	if (fd < 0) {
		printf("open /dev/vfio/vfio: %s\n", strerror(errno));
		return 1;
	}
	printf("fd=%d\n", fd);
	printf("api=%d\n", ioctl(fd, VFIO_GET_API_VERSION));
	printf("type1v2=%d\n", ioctl(fd, VFIO_CHECK_EXTENSION, 3UL));
	int io = open("/dev/ioasid", O_RDWR);
	printf("ioasid_api=%d\n", io < 0 ? -errno : ioctl(io, VFIO_GET_API_VERSION));
	return 0;
}
