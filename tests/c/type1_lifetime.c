/*
 * type1_lifetime.c - fidelity probe for object lifetime (vfio-legacy.md §3): fds shared with a
 * forked child, a child's mappings outliving it, closing the container fd while a group holds it,
 * closing an attached group, and what the last group leaving takes with it.
 *
 * Output: "<what> = <ret>" or "<what> = -1 <ERRNONAME>", plus "<what>.<field> = <value>".
 * Usage: type1_lifetime [GROUP]   (default 1)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/vfio.h>
#include "probe.h"

#define PAGE 4096UL

static void report(const char *what, long ret)
{
	if (ret < 0)
		printf("%s = -1 %s\n", what, errname(errno));
	else
		printf("%s = %ld\n", what, ret);
	fflush(stdout);
}

static void *buffer;

static long map(int container, unsigned long iova)
{
	struct vfio_iommu_type1_dma_map m = {
		.argsz = sizeof(m), .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = (unsigned long)buffer, .iova = iova, .size = PAGE,
	};
	return ioctl(container, VFIO_IOMMU_MAP_DMA, &m);
}

static long unmap(const char *what, int container, unsigned long iova, unsigned long size)
{
	struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .iova = iova, .size = size };
	long r = ioctl(container, VFIO_IOMMU_UNMAP_DMA, &u);
	report(what, r);
	if (r == 0)
		printf("%s.size = %#llx\n", what, (unsigned long long)u.size);
	return r;
}

static void status(const char *what, int group)
{
	struct vfio_group_status s = { .argsz = sizeof(s) };
	long r = ioctl(group, VFIO_GROUP_GET_STATUS, &s);
	report(what, r);
	printf("%s.flags = %#x\n", what, r == 0 ? s.flags : 0);
}

static long unmap_all(const char *what, int container)
{
	struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .flags = VFIO_DMA_UNMAP_FLAG_ALL };
	long r = ioctl(container, VFIO_IOMMU_UNMAP_DMA, &u);
	report(what, r);
	printf("%s.size = %#llx\n", what, r == 0 ? (unsigned long long)u.size : 0ULL);
	return r;
}

int main(int argc, char **argv)
{
	char path[64];
	int status_code;

	snprintf(path, sizeof(path), "/dev/vfio/%s", argc > 1 ? argv[1] : "1");
	buffer = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	memset(buffer, 0x5a, 4 * PAGE);

	int container = open("/dev/vfio/vfio", O_RDWR);
	report("open container", container);
	int group = open(path, O_RDWR);
	report("open group", group);
	report("SET_CONTAINER", ioctl(group, VFIO_GROUP_SET_CONTAINER, &container));
	report("SET_IOMMU(TYPE1v2)", ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU));
	report("parent: MAP 0x1000", map(container, 0x1000));

	/* A forked child shares the open files: same container, same group. */
	pid_t child = fork();
	if (child == 0) {
		report("child: MAP 0x2000", map(container, 0x2000));
		report("child: MAP 0x1000 (parent's)", map(container, 0x1000));
		status("child: GET_STATUS (inherited group)", group);
		report("child: open group again", open(path, O_RDWR));
		unmap("child: UNMAP 0x3000 (nothing)", container, 0x3000, PAGE);
		_exit(0);
	}
	waitpid(child, &status_code, 0);
	report("child exited", WEXITSTATUS(status_code));

	/* The child's mapping outlives the child; anyone with the container fd may unmap it. */
	unmap("parent: UNMAP 0x2000 (child's)", container, 0x2000, PAGE);
	report("parent: MAP 0x2000 again", map(container, 0x2000));

	/* Closing the container fd unmaps nothing while the group holds the container. */
	int spare = dup(container);
	report("close container", close(container));
	status("GET_STATUS after container close", group);
	unmap_all("UNMAP_ALL through a dup", spare);
	report("MAP 0x4000 through the dup", map(spare, 0x4000));
	report("close dup", close(spare));
	status("GET_STATUS after every container fd is closed", group);

	/* The last group leaving destroys the IOMMU state; the container itself is unreachable now,
	 * so check on a new container that nothing carried over, then close the attached group. */
	report("UNSET_CONTAINER", ioctl(group, VFIO_GROUP_UNSET_CONTAINER));
	status("GET_STATUS after unset", group);
	int second = open("/dev/vfio/vfio", O_RDWR);
	report("open second container", second);
	report("SET_CONTAINER(second)", ioctl(group, VFIO_GROUP_SET_CONTAINER, &second));
	report("second: MAP before SET_IOMMU", map(second, 0x1000));
	report("second: SET_IOMMU(TYPE1)", ioctl(second, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU));
	unmap_all("second: UNMAP_ALL (fresh)", second);
	report("second: MAP 0x1000", map(second, 0x1000));

	/* Closing an attached group detaches it: the container loses its IOMMU state. */
	report("close group", close(group));
	report("second: CHECK_EXTENSION(UPDATE_VADDR) after group close",
	       ioctl(second, VFIO_CHECK_EXTENSION, VFIO_UPDATE_VADDR));
	report("second: MAP after group close", map(second, 0x1000));
	group = open(path, O_RDWR);
	report("reopen group", group);
	status("GET_STATUS after reopen", group);
	report("SET_CONTAINER(second) again", ioctl(group, VFIO_GROUP_SET_CONTAINER, &second));
	report("second: SET_IOMMU(TYPE1v2) again", ioctl(second, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU));
	unmap_all("second: UNMAP_ALL (nothing survived)", second);
	return 0;
}
