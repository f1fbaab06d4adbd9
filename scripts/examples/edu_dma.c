/*
 * A complete userspace VFIO driver for QEMU's edu device, the way one is written for real
 * hardware: find the device's IOMMU group in sysfs, set up a type1 container, map a buffer,
 * program the device through BAR0 with pread/pwrite, let it DMA RAM -> device -> RAM, take its
 * MSI through an eventfd, and watch a DMA to an unmapped IOVA get blocked by the IOMMU.
 *
 *   edu_dma [BDF]        (default 0000:00:01.0)
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/vfio.h>

#define BAR0 ((off_t)VFIO_PCI_BAR0_REGION_INDEX << 40)
#define CONFIG ((off_t)VFIO_PCI_CONFIG_REGION_INDEX << 40)
#define IOVA 0x100000UL

static void die(const char *what)
{
	fprintf(stderr, "%s: %s\n", what, strerror(errno));
	exit(1);
}

static uint32_t rd(int dev, unsigned off)
{
	uint32_t v;
	if (pread(dev, &v, 4, BAR0 + off) != 4)
		die("pread BAR0");
	return v;
}

static void wr(int dev, unsigned off, uint32_t v)
{
	if (pwrite(dev, &v, 4, BAR0 + off) != 4)
		die("pwrite BAR0");
}

static int dma(int dev, int efd, uint64_t src, uint64_t dst, uint32_t count, int to_ram)
{
	uint64_t n;
	wr(dev, 0x80, src);
	wr(dev, 0x88, dst);
	wr(dev, 0x90, count);
	wr(dev, 0x98, 0x1 | (to_ram ? 0x2 : 0) | 0x4);	/* start, direction, irq when done */
	struct pollfd p = { .fd = efd, .events = POLLIN };
	if (poll(&p, 1, 2000) != 1 || read(efd, &n, 8) != 8)
		return -1;
	wr(dev, 0x64, rd(dev, 0x24));	/* acknowledge */
	return (int)n;
}

int main(int argc, char **argv)
{
	const char *bdf = argc > 1 ? argv[1] : "0000:00:01.0";
	char path[256], link[256];

	snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/iommu_group", bdf);
	ssize_t n = readlink(path, link, sizeof link - 1);
	if (n < 0)
		die(path);
	link[n] = 0;
	const char *group_id = basename(link);
	printf("%s is in IOMMU group %s\n", bdf, group_id);

	int container = open("/dev/vfio/vfio", O_RDWR);
	snprintf(path, sizeof path, "/dev/vfio/%s", group_id);
	int group = open(path, O_RDWR);
	if (container < 0 || group < 0)
		die("open");
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) ||
	    ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		die("container");

	size_t size = 2 * 4096;
	uint8_t *buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct vfio_iommu_type1_dma_map map = {
		.argsz = sizeof map, .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = (uintptr_t)buf, .iova = IOVA, .size = size,
	};
	if (ioctl(container, VFIO_IOMMU_MAP_DMA, &map))
		die("VFIO_IOMMU_MAP_DMA");
	printf("mapped %zu bytes at IOVA %#lx\n", size, IOVA);

	int dev = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
	if (dev < 0)
		die("VFIO_GROUP_GET_DEVICE_FD");
	struct vfio_device_info info = { .argsz = sizeof info };
	ioctl(dev, VFIO_DEVICE_GET_INFO, &info);
	printf("device fd %d: %u regions, %u irqs\n", dev, info.num_regions, info.num_irqs);

	uint16_t cmd = 0x0106;	/* memory decode + bus master */
	if (pwrite(dev, &cmd, 2, CONFIG + 4) != 2)
		die("command register");
	printf("identification %#010x, liveness(~0x12345678) ", rd(dev, 0x00));
	wr(dev, 0x04, 0x12345678);
	printf("%#010x\n", rd(dev, 0x04));

	int efd = eventfd(0, 0);
	char irqbuf[sizeof(struct vfio_irq_set) + sizeof(int)];
	struct vfio_irq_set *irq = (struct vfio_irq_set *)irqbuf;
	*irq = (struct vfio_irq_set){ .argsz = sizeof irqbuf, .index = VFIO_PCI_MSI_IRQ_INDEX,
		.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, .count = 1 };
	memcpy(irq->data, &efd, sizeof efd);
	if (ioctl(dev, VFIO_DEVICE_SET_IRQS, irq))
		die("VFIO_DEVICE_SET_IRQS");

	for (int i = 0; i < 256; i++)
		buf[i] = (uint8_t)(i * 7);
	printf("DMA RAM -> device: %d interrupt(s)\n", dma(dev, efd, IOVA, 0x40000, 256, 0));
	printf("DMA device -> RAM: %d interrupt(s)\n", dma(dev, efd, 0x40000, IOVA + 4096, 256, 1));
	printf("the copy %s the pattern\n", memcmp(buf, buf + 4096, 256) ? "differs from" : "matches");

	memset(buf + 4096, 0, 256);
	printf("DMA to unmapped IOVA 0x300000: %d interrupt(s), memory %s\n",
	       dma(dev, efd, 0x40000, 0x300000, 256, 1),
	       memcmp(buf + 4096, (uint8_t[256]){0}, 256) ? "changed" : "untouched (IOMMU fault)");

	close(dev);
	struct vfio_iommu_type1_dma_unmap unmap = { .argsz = sizeof unmap, .iova = IOVA, .size = size };
	ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap);
	printf("unmapped %#llx bytes; done\n", (unsigned long long)unmap.size);
	return 0;
}
