/*
 * edu_vfio.h - what the small edu test programs share: find the device's group in sysfs, set up
 * a type1v2 container, get the device fd, and access BAR0 through it. Include after "probe.h".
 * (edu_driver.c spells all of this out step by step, reporting each call; these programs only
 * need it done.)
 */
#ifndef IOASIDFS_EDU_VFIO_H
#define IOASIDFS_EDU_VFIO_H

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/vfio.h>
#include "edu_regs.h"

struct edu_vfio {
	int container, group, dev;
};

static struct edu_vfio edu;

static void die(const char *what)
{
	printf("%s failed: %s\n", what, errname(errno));
	exit(1);
}

static uint32_t rd(unsigned off)
{
	uint32_t v;
	if (pread(edu.dev, &v, 4, BAR0 + off) != 4)
		die("pread BAR0");
	return v;
}

static void wr(unsigned off, uint32_t v)
{
	if (pwrite(edu.dev, &v, 4, BAR0 + off) != 4)
		die("pwrite BAR0");
}

static void set_command(uint16_t cmd)
{
	if (pwrite(edu.dev, &cmd, 2, CFG + 4) != 2)
		die("command register");
}

/* Group from sysfs, container with type1v2, device fd (its mappings are the caller's). */
static void edu_open(const char *bdf)
{
	char path[256], link[256];

	snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/iommu_group", bdf);
	ssize_t n = readlink(path, link, sizeof link - 1);
	if (n < 0)
		die(path);
	link[n] = 0;
	edu.container = open("/dev/vfio/vfio", O_RDWR);
	snprintf(path, sizeof path, "/dev/vfio/%s", basename(link));
	edu.group = open(path, O_RDWR);
	if (edu.container < 0 || edu.group < 0)
		die("open");
	if (ioctl(edu.group, VFIO_GROUP_SET_CONTAINER, &edu.container) ||
	    ioctl(edu.container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		die("container");
}

static void edu_get_device(const char *bdf)
{
	edu.dev = ioctl(edu.group, VFIO_GROUP_GET_DEVICE_FD, bdf);
	if (edu.dev < 0)
		die("VFIO_GROUP_GET_DEVICE_FD");
}

static void edu_close(void)
{
	close(edu.dev);
	close(edu.group);
	close(edu.container);
}

#endif
