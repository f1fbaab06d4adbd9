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
#define BACKGROUND_BASE 0x100000000UL /* live mappings live at 4 GiB and up */
#define PROBE_IOVA 0x10000UL          /* the timed pair maps and unmaps here */

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

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int iterations = argc > 1 ? atoi(argv[1]) : 2000;
	long sizes[8] = { 0, 1000, 60000 };
	int nsizes = 3, live = 0;

	if (argc > 2) {
		nsizes = 0;
		for (int i = 2; i < argc && nsizes < 8; i++)
			sizes[nsizes++] = atol(argv[i]);
	}
	container = open("/dev/vfio/vfio", O_RDWR);
	int group = open("/dev/vfio/1", O_RDWR);
	if (container < 0 || group < 0)
		die("open");
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) || ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		die("set up the container");
	page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	double *samples = calloc(iterations, sizeof(double));

	for (int s = 0; s < nsizes; s++) {
		while (live < sizes[s])
			if (map(BACKGROUND_BASE + PAGE * live++))
				die("background map");
		for (int i = 0; i < iterations; i++) {
			struct timespec a, b;
			clock_gettime(CLOCK_MONOTONIC, &a);
			if (map(PROBE_IOVA) || unmap(PROBE_IOVA))
				die("timed map/unmap");
			clock_gettime(CLOCK_MONOTONIC, &b);
			samples[i] = (b.tv_sec - a.tv_sec) * 1e6 + (b.tv_nsec - a.tv_nsec) / 1e3;
		}
		qsort(samples, iterations, sizeof(double), cmp);
		printf("live=%ld map_unmap_us=%.1f p99_us=%.1f\n", sizes[s], samples[iterations / 2],
		       samples[iterations * 99 / 100]);
	}
	return 0;
}
