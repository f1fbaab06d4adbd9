/*
 * The classic VFIO container flow from the kernel's Documentation/driver-api/vfio.rst, unmodified
 * in spirit: open the container, check the API and the type1 extension, open the group, check it
 * is viable, add it to the container, enable the IOMMU model, read the IOMMU info, map a buffer
 * for DMA and unmap it. It hard-codes /dev/vfio/vfio and /dev/vfio/<group> like real programs do.
 *
 * usage: vfio_classic [GROUP]   (default 1)
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define CHECK(what, expr)                                                        \
	do {                                                                     \
		long r_ = (long)(expr);                                          \
		if (r_ < 0) {                                                    \
			printf("%-40s failed: %s\n", what, strerror(errno));     \
			return 1;                                                \
		}                                                                \
		printf("%-40s = %ld\n", what, r_);                               \
	} while (0)

int main(int argc, char **argv)
{
	const char *group_id = argc > 1 ? argv[1] : "1";
	char path[64];
	int container, group;

	setvbuf(stdout, NULL, _IONBF, 0);
	CHECK("open /dev/vfio/vfio", container = open("/dev/vfio/vfio", O_RDWR));
	if (ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION) {
		printf("unknown VFIO API version\n");
		return 1;
	}
	CHECK("VFIO_GET_API_VERSION", ioctl(container, VFIO_GET_API_VERSION));
	CHECK("VFIO_CHECK_EXTENSION(TYPE1v2)", ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU));

	snprintf(path, sizeof(path), "/dev/vfio/%s", group_id);
	CHECK(path, group = open(path, O_RDWR));

	struct vfio_group_status status = { .argsz = sizeof(status) };
	CHECK("VFIO_GROUP_GET_STATUS", ioctl(group, VFIO_GROUP_GET_STATUS, &status));
	printf("%-40s = %#x\n", "  status.flags", status.flags);
	if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
		printf("group is not viable (are all its devices bound to vfio-pci?)\n");
		return 1;
	}
	CHECK("VFIO_GROUP_SET_CONTAINER", ioctl(group, VFIO_GROUP_SET_CONTAINER, &container));
	CHECK("VFIO_SET_IOMMU(TYPE1v2)", ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU));

	struct vfio_iommu_type1_info info = { .argsz = sizeof(info) };
	CHECK("VFIO_IOMMU_GET_INFO", ioctl(container, VFIO_IOMMU_GET_INFO, &info));
	printf("%-40s = %#x\n", "  info.flags", info.flags);
	printf("%-40s = %#llx\n", "  info.iova_pgsizes", (unsigned long long)info.iova_pgsizes);
	printf("%-40s = %u (needs argsz for the capability chain)\n", "  info.argsz", info.argsz);

	size_t size = 1024 * 1024;
	void *buffer = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct vfio_iommu_type1_dma_map map = {
		.argsz = sizeof(map),
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = (unsigned long)buffer,
		.iova = 0,
		.size = size,
	};
	CHECK("VFIO_IOMMU_MAP_DMA(iova 0, 1 MiB)", ioctl(container, VFIO_IOMMU_MAP_DMA, &map));

	struct vfio_iommu_type1_dma_unmap unmap = { .argsz = sizeof(unmap), .iova = 0, .size = size };
	CHECK("VFIO_IOMMU_UNMAP_DMA(iova 0, 1 MiB)", ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap));
	printf("%-40s = %#llx\n", "  unmap.size", (unsigned long long)unmap.size);

	CHECK("VFIO_GROUP_UNSET_CONTAINER", ioctl(group, VFIO_GROUP_UNSET_CONTAINER));
	close(group);
	close(container);
	printf("done\n");
	return 0;
}
