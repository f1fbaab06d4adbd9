/*
 * edu_dirty.c - type1 dirty-page tracking while a real device DMAs (VFIO_IOMMU_DIRTY_PAGES,
 * UNMAP_DMA with GET_DIRTY_BITMAP), the way a VMM's live migration loop uses it.
 *
 * The edu device writes a few chosen pages of two mapped buffers; after each step the program
 * prints the dirty bitmap words. Behind a real IOMMU (vfio-pci) the kernel cannot see device
 * writes and reports every mapped page dirty; a group whose driver works through pinned pages
 * (pinned_page_dirty_scope) reports exactly the pages written. Both are printed in full, shift
 * quirks of update_user_bitmap included, so a run compares line for line.
 *
 *   edu_dirty [BDF]        (default 0000:00:01.0)
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

#include "probe.h"
#include "labels.h"
#include "edu_vfio.h"

#define PG 4096UL
#define IOVA_A 0x100000UL	/* 16 pages */
#define IOVA_B 0x110000UL	/* 8 pages, right after A: bit 16 of a bitmap based at A */

static int efd;

/* One edu DMA; the device signals completion with an MSI. Returns the interrupts seen. */
static int dma(uint64_t src, uint64_t dst, uint32_t count, int to_ram)
{
	uint64_t n;
	wr(EDU_DMA_SRC, src);
	wr(EDU_DMA_DST, dst);
	wr(EDU_DMA_CNT, count);
	wr(EDU_DMA_CMD, DMA_RUN | (to_ram ? DMA_TO_RAM : 0) | DMA_IRQ);
	struct pollfd p = { .fd = efd, .events = POLLIN };
	if (poll(&p, 1, 2000) != 1 || read(efd, &n, 8) != 8)
		return -1;
	wr(EDU_IRQ_ACK, rd(EDU_IRQ_STATUS));
	return (int)n;
}

static void to_ram(const char *what, uint64_t iova, uint32_t count)
{
	char label[128];
	snprintf(label, sizeof label, "DMA device->RAM %s", what);
	note(label, "%d interrupt(s)", dma(EDU_BUF, iova, count, 1));
}

static void dirty(const char *label, uint32_t flags)
{
	struct vfio_iommu_type1_dirty_bitmap d = { .argsz = sizeof d, .flags = flags };
	int ret = ioctl(edu.container, VFIO_IOMMU_DIRTY_PAGES, &d);
	report(label, ret, errno);
}

/* GET_BITMAP of [iova, iova+size) into a 2-word bitmap prefilled with 'fill'; prints both words. */
static void get_bitmap(const char *what, uint64_t iova, uint64_t size, uint64_t fill)
{
	char buf[sizeof(struct vfio_iommu_type1_dirty_bitmap) +
		 sizeof(struct vfio_iommu_type1_dirty_bitmap_get)];
	struct vfio_iommu_type1_dirty_bitmap *d = (void *)buf;
	struct vfio_iommu_type1_dirty_bitmap_get *get = (void *)d->data;
	uint64_t words[2] = { fill, fill };
	char label[160];

	d->argsz = sizeof buf;
	d->flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP;
	get->iova = iova;
	get->size = size;
	get->bitmap.pgsize = PG;
	get->bitmap.size = sizeof words;
	get->bitmap.data = (void *)words;
	snprintf(label, sizeof label, "GET_BITMAP %s", what);
	int ret = ioctl(edu.container, VFIO_IOMMU_DIRTY_PAGES, buf);
	if (report(label, ret, errno) == 0) {
		snprintf(label, sizeof label, "GET_BITMAP %s: words", what);
		note(label, "0x%016llx 0x%016llx", (unsigned long long)words[0],
		     (unsigned long long)words[1]);
	}
}

static void unmap_bitmap(const char *what, uint64_t iova, uint64_t size)
{
	char buf[sizeof(struct vfio_iommu_type1_dma_unmap) + sizeof(struct vfio_bitmap)];
	struct vfio_iommu_type1_dma_unmap *u = (void *)buf;
	struct vfio_bitmap *bm = (void *)u->data;
	uint64_t words[2] = { 0, 0 };
	char label[160];

	u->argsz = sizeof buf;
	u->flags = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP;
	u->iova = iova;
	u->size = size;
	bm->pgsize = PG;
	bm->size = sizeof words;
	bm->data = (void *)words;
	snprintf(label, sizeof label, "UNMAP+GET_DIRTY_BITMAP %s", what);
	int ret = ioctl(edu.container, VFIO_IOMMU_UNMAP_DMA, buf);
	if (report(label, ret, errno) == 0) {
		snprintf(label, sizeof label, "UNMAP+GET_DIRTY_BITMAP %s: size, words", what);
		note(label, "%#llx 0x%016llx 0x%016llx", (unsigned long long)u->size,
		     (unsigned long long)words[0], (unsigned long long)words[1]);
	}
}

static void map(uint64_t iova, void *vaddr, uint64_t size)
{
	struct vfio_iommu_type1_dma_map m = {
		.argsz = sizeof m, .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = (uintptr_t)vaddr, .iova = iova, .size = size,
	};
	char label[64];
	snprintf(label, sizeof label, "MAP_DMA %#llx+%#llx", (unsigned long long)iova,
		 (unsigned long long)size);
	int ret = ioctl(edu.container, VFIO_IOMMU_MAP_DMA, &m);
	if (report(label, ret, errno) < 0)
		exit(1);
}

int main(int argc, char **argv)
{
	const char *bdf = argc > 1 ? argv[1] : "0000:00:01.0";
	edu_open(bdf);
	uint8_t *a = mmap(NULL, 16 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *b = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED || b == MAP_FAILED)
		die("mmap");
	map(IOVA_A, a, 16 * PG);
	map(IOVA_B, b, 8 * PG);

	edu_get_device(bdf);
	set_command(0x0106);	/* memory decode + bus master */
	efd = eventfd(0, 0);
	char irqbuf[sizeof(struct vfio_irq_set) + sizeof(int)];
	struct vfio_irq_set *irq = (struct vfio_irq_set *)irqbuf;
	*irq = (struct vfio_irq_set){ .argsz = sizeof irqbuf, .index = VFIO_PCI_MSI_IRQ_INDEX,
		.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, .count = 1 };
	memcpy(irq->data, &efd, sizeof efd);
	if (ioctl(edu.dev, VFIO_DEVICE_SET_IRQS, irq))
		die("VFIO_DEVICE_SET_IRQS");

	/* Writes before tracking starts are not reported. */
	to_ram("A page 0 (untracked)", IOVA_A, 64);
	dirty("DIRTY_PAGES(START)", VFIO_IOMMU_DIRTY_PAGES_FLAG_START);
	get_bitmap("A, nothing written yet", IOVA_A, 16 * PG, 0);

	/* A device read of memory dirties nothing; writes dirty the pages they touch. */
	note("DMA RAM->device A page 12", "%d interrupt(s)", dma(IOVA_A + 12 * PG, EDU_BUF, 256, 0));
	to_ram("A page 3", IOVA_A + 3 * PG + 100, 256);
	to_ram("A pages 5-6", IOVA_A + 6 * PG - 128, 256);
	get_bitmap("A", IOVA_A, 16 * PG, 0);
	get_bitmap("A again", IOVA_A, 16 * PG, 0);

	/* Two mappings in one report: B starts 16 pages in, so its bits are shifted into place. */
	to_ram("A page 1", IOVA_A + 1 * PG, 8);
	to_ram("B page 2", IOVA_B + 2 * PG + 4000, 8);
	to_ram("B page 7", IOVA_B + 7 * PG, 2048);
	get_bitmap("A and B", IOVA_A, 24 * PG, 0);
	get_bitmap("A and B again", IOVA_A, 24 * PG, 0);
	get_bitmap("B alone, bitmap prefilled", IOVA_B, 8 * PG, 0xf0f0f0f0f0f0f0f0ULL);

	/* The unmap reports the unmapped range one last time. */
	to_ram("B page 4", IOVA_B + 4 * PG, 16);
	unmap_bitmap("B", IOVA_B, 8 * PG);

	/* A blocked DMA (B is gone) writes nothing, so it dirties nothing. */
	to_ram("B page 0 (unmapped: IOMMU fault)", IOVA_B, 64);
	get_bitmap("A after the fault", IOVA_A, 16 * PG, 0);

	/* STOP drops everything; START begins a new, clean round. */
	to_ram("A page 9", IOVA_A + 9 * PG, 64);
	dirty("DIRTY_PAGES(STOP)", VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP);
	get_bitmap("A while stopped", IOVA_A, 16 * PG, 0);
	dirty("DIRTY_PAGES(START)", VFIO_IOMMU_DIRTY_PAGES_FLAG_START);
	to_ram("A page 15", IOVA_A + 15 * PG + 2048, 2048);
	unmap_bitmap("A", IOVA_A, 16 * PG);
	dirty("DIRTY_PAGES(STOP)", VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP);

	edu_close();
	note("done", "ok");
	return 0;
}
