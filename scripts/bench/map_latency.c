/*
 * MAP_DMA + UNMAP_DMA latency of one 4 KiB page on a type1v2 container that already holds
 * N live mappings (N = 0, 1000, 60000 by default). Run under `ioasidfs run` (or on a real
 * kernel with an IOMMU). Prints one line per N: "live=<N> map_unmap_us=<median per pair>".
 *
 * usage: map_latency [ITERATIONS] [N...]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#include "latency.h"

static int container;
static void *page;

static void die(const char *what)
{
	fprintf(stderr, "map_latency: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int map(unsigned long iova)
{
	struct vfio_iommu_type1_dma_map m = {
		.argsz = sizeof(m),
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = (unsigned long)page, .iova = iova, .size = PAGE,
	};
	return ioctl(container, VFIO_IOMMU_MAP_DMA, &m);
}

static int unmap(unsigned long iova)
{
	struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .iova = iova, .size = PAGE };
	return ioctl(container, VFIO_IOMMU_UNMAP_DMA, &u);
}

int main(int argc, char **argv)
{
	container = open("/dev/vfio/vfio", O_RDWR);
	int group = open("/dev/vfio/1", O_RDWR);
	if (container < 0 || group < 0)
		die("open");
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) || ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		die("set up the container");
	page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	measure(argc, argv, "map_unmap_us", "");
	return 0;
}
