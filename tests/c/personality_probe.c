/*
 * Which personality answers /dev/vfio/vfio? type1 and iommufd's VFIO compatibility differ on
 * fresh containers (iommufd.md §3.3): DMA_CC is 0 vs ENODEV, SET_IOMMU without a group is EINVAL
 * vs ENODEV, SET_IOMMU of an unknown type is ENODEV vs EINVAL.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <linux/vfio.h>
#include "probe.h"

static void report(const char *what, long r)
{
	if (r < 0)
		printf("%s = -1 %s\n", what, errname(errno));
	else
		printf("%s = %ld\n", what, r);
}

int main(void)
{
	int c = open("/dev/vfio/vfio", O_RDWR);
	report("CHECK_EXTENSION(DMA_CC)", ioctl(c, VFIO_CHECK_EXTENSION, VFIO_DMA_CC_IOMMU));
	report("SET_IOMMU(TYPE1v2) without a group", ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU));
	report("SET_IOMMU(42) without a group", ioctl(c, VFIO_SET_IOMMU, 42));
	return 0;
}
