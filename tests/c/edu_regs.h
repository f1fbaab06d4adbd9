/*
 * edu_regs.h - QEMU's edu device as every edu test program sees it: its BAR0 register map
 * (QEMU docs/specs/edu.rst), where vfio-pci puts BAR0 and config space in the device fd, a
 * silent register read for polling, and the monotonic clock the polls are bounded by.
 */
#ifndef IOASIDFS_EDU_REGS_H
#define IOASIDFS_EDU_REGS_H

#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <linux/vfio.h>

#define EDU_ID		0x00
#define EDU_LIVENESS	0x04	/* reads back the bitwise NOT of what was written */
#define EDU_FACT	0x08
#define EDU_STATUS	0x20
#define EDU_IRQ_STATUS	0x24
#define EDU_IRQ_RAISE	0x60
#define EDU_IRQ_ACK	0x64
#define EDU_DMA_SRC	0x80
#define EDU_DMA_DST	0x88
#define EDU_DMA_CNT	0x90
#define EDU_DMA_CMD	0x98
#define EDU_BUF		0x40000	/* the device's own 4 KiB buffer */
#define EDU_BUF_SIZE	0x1000

#define STATUS_COMPUTING 0x01
#define STATUS_IRQFACT	0x80
#define DMA_RUN		0x1
#define DMA_TO_RAM	0x2
#define DMA_IRQ		0x4
#define IRQ_FACT	0x1
#define IRQ_DMA		0x100

/* vfio-pci's region offsets in a device fd (VFIO_PCI_OFFSET_SHIFT = 40). */
#define BAR0 ((off_t)VFIO_PCI_BAR0_REGION_INDEX << 40)
#define CFG ((off_t)VFIO_PCI_CONFIG_REGION_INDEX << 40)

/* A 32-bit BAR0 register of device fd 'fd', without a report line; ~0 if the read fails. */
static inline uint32_t edu_peek(int fd, unsigned int off)
{
	uint32_t v;

	if (pread(fd, &v, 4, BAR0 + off) != 4)
		return 0xffffffffu;
	return v;
}

/* Seconds on CLOCK_MONOTONIC: what bounded waits for the device measure. */
static inline double edu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

#endif
