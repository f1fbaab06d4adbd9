/*
 * IOMMU_IOAS_MAP + IOMMU_IOAS_UNMAP latency of one 4 KiB page on an IOAS that already holds
 * N live areas (N = 0, 1000, 60000 by default), the iommufd counterpart of map_latency.c. Run
 * under `ioasidfs run` (or on a real kernel with an IOMMU). The IOAS is the compat IOAS of an
 * iommufd to which group 1 is attached; its device is opened so that the IOAS has an IOMMU
 * domain and every map pins (checks the caller's memory), as a type1 map does. Prints one
 * line per N: "live=<N> ioas_map_unmap_us=<median per pair> p99_us=<...> domain=<0|1>".
 *
 * usage: ioas_map_latency [ITERATIONS] [N...]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* include/uapi/linux/iommufd.h (not installed on every machine) */
#define IOMMUFD_TYPE ';'
#define IOMMU_IOAS_MAP _IO(IOMMUFD_TYPE, 0x85)
#define IOMMU_IOAS_UNMAP _IO(IOMMUFD_TYPE, 0x86)
#define IOMMU_VFIO_IOAS _IO(IOMMUFD_TYPE, 0x88)
#define IOMMU_IOAS_MAP_FIXED_IOVA (1 << 0)
#define IOMMU_IOAS_MAP_WRITEABLE (1 << 1)
#define IOMMU_IOAS_MAP_READABLE (1 << 2)
#define IOMMU_VFIO_IOAS_GET 0

struct iommu_ioas_map {
	uint32_t size, flags, ioas_id, __reserved;
	uint64_t user_va, length, iova;
};

struct iommu_ioas_unmap {
	uint32_t size, ioas_id;
	uint64_t iova, length;
};

struct iommu_vfio_ioas {
	uint32_t size, ioas_id;
	uint16_t op, __reserved;
};

#define PAGE 4096UL
#include "latency.h"
#define BACKGROUND_BASE 0x100000000UL /* live areas live at 4 GiB and up */

static int iommufd;
static uint32_t ioas_id;
static void *page;

static void die(const char *what)
{
	fprintf(stderr, "ioas_map_latency: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int map(unsigned long iova)
{
	struct iommu_ioas_map m = {
		.size = sizeof(m), .ioas_id = ioas_id,
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
		.user_va = (unsigned long)page, .length = PAGE, .iova = iova,
	};
	return ioctl(iommufd, IOMMU_IOAS_MAP, &m);
}

static int unmap(unsigned long iova)
{
	struct iommu_ioas_unmap u = { .size = sizeof(u), .ioas_id = ioas_id, .iova = iova, .length = PAGE };
	return ioctl(iommufd, IOMMU_IOAS_UNMAP, &u);
}

int main(int argc, char **argv)
{
	iommufd = open("/dev/iommu", O_RDWR);
	int group = open("/dev/vfio/1", O_RDWR);
	if (iommufd < 0 || group < 0)
		die("open");
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &iommufd))
		die("attach the group to the iommufd");
	struct iommu_vfio_ioas get = { .size = sizeof(get), .op = IOMMU_VFIO_IOAS_GET };
	if (ioctl(iommufd, IOMMU_VFIO_IOAS, &get))
		die("IOMMU_VFIO_IOAS(GET)");
	ioas_id = get.ioas_id;
	/* The device's first open attaches it: the IOAS gets its IOMMU domain. */
	int device = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, "0000:00:01.0");
	page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	measure(argc, argv, "ioas_map_unmap_us", device >= 0 ? " domain=1" : " domain=0");
	return 0;
}
