/*
 * iommufd_cdev.h - the part of the upstream iommufd and VFIO-cdev uAPI that cdev_flow.c and
 * ioasid_native.c use, for build machines whose headers predate it (Debian 12 has no <linux/iommufd.h> and a 6.1
 * <linux/vfio.h> without the cdev ioctls).  Written from the upstream uAPI's facts
 * (include/uapi/linux/iommufd.h, include/uapi/linux/vfio.h): ioctl numbers, field offsets and
 * flag values.  Every block is skipped when the system headers already define it, so the
 * program builds unchanged against newer headers (whose structs may have grown: the program
 * sets argsz/size to the minimum it means, never to sizeof).  Include after <linux/vfio.h>.
 */
#ifndef IOASIDFS_IOMMUFD_CDEV_H
#define IOASIDFS_IOMMUFD_CDEV_H

#include <stdint.h>
#include <sys/ioctl.h>
#include <linux/types.h>

#if defined(__has_include)
#if __has_include(<linux/iommufd.h>)
#include <linux/iommufd.h>
#endif
#endif

/* ---- iommufd (/dev/iommu): _IO(';', 0x80 + n), structs start with their u32 size ---- */
#ifndef IOMMU_IOAS_ALLOC
#define IOMMUFD_TYPE (';')

struct iommu_destroy {		/* 8 bytes */
	__u32 size;
	__u32 id;
};
#define IOMMU_DESTROY _IO(IOMMUFD_TYPE, 0x80)

struct iommu_ioas_alloc {	/* 12 bytes */
	__u32 size;
	__u32 flags;
	__u32 out_ioas_id;
};
#define IOMMU_IOAS_ALLOC _IO(IOMMUFD_TYPE, 0x81)

enum iommufd_ioas_map_flags {
	IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0,
	IOMMU_IOAS_MAP_WRITEABLE = 1 << 1,
	IOMMU_IOAS_MAP_READABLE = 1 << 2,
};

struct iommu_ioas_map {		/* 40 bytes */
	__u32 size;
	__u32 flags;
	__u32 ioas_id;
	__u32 __reserved;
	__aligned_u64 user_va;
	__aligned_u64 length;
	__aligned_u64 iova;
};
#define IOMMU_IOAS_MAP _IO(IOMMUFD_TYPE, 0x85)

struct iommu_ioas_unmap {	/* 24 bytes */
	__u32 size;
	__u32 ioas_id;
	__aligned_u64 iova;
	__aligned_u64 length;
};
#define IOMMU_IOAS_UNMAP _IO(IOMMUFD_TYPE, 0x86)

struct iommu_iova_range {	/* 16 bytes: one element of allowed_iovas */
	__aligned_u64 start;
	__aligned_u64 last;
};

struct iommu_ioas_iova_ranges {	/* 32 bytes */
	__u32 size;
	__u32 ioas_id;
	__u32 num_iovas;
	__u32 __reserved;
	__aligned_u64 allowed_iovas;
	__aligned_u64 out_iova_alignment;
};
#define IOMMU_IOAS_IOVA_RANGES _IO(IOMMUFD_TYPE, 0x84)

struct iommu_ioas_copy {	/* 40 bytes; flags as iommu_ioas_map's */
	__u32 size;
	__u32 flags;
	__u32 dst_ioas_id;
	__u32 src_ioas_id;
	__aligned_u64 length;
	__aligned_u64 dst_iova;
	__aligned_u64 src_iova;
};
#define IOMMU_IOAS_COPY _IO(IOMMUFD_TYPE, 0x83)

enum iommufd_vfio_ioas_op {
	IOMMU_VFIO_IOAS_GET = 0,
	IOMMU_VFIO_IOAS_SET = 1,
	IOMMU_VFIO_IOAS_CLEAR = 2,
};

struct iommu_vfio_ioas {	/* 12 bytes */
	__u32 size;
	__u32 ioas_id;
	__u16 op;
	__u16 __reserved;
};
#define IOMMU_VFIO_IOAS _IO(IOMMUFD_TYPE, 0x88)
#endif /* IOMMU_IOAS_ALLOC */

/* ---- VFIO device cdev ioctls (>= 6.6): _IO(VFIO_TYPE, VFIO_BASE + 18..20) ---- */
#ifndef VFIO_DEVICE_BIND_IOMMUFD
struct vfio_device_bind_iommufd {	/* 16 bytes; >= 6.17 appends u64 token_uuid_ptr */
	__u32 argsz;
	__u32 flags;
	__s32 iommufd;
	__u32 out_devid;
};
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)

struct vfio_device_attach_iommufd_pt {	/* 12 bytes; >= 6.15 appends u32 pasid */
	__u32 argsz;
	__u32 flags;
	__u32 pt_id;
};
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 19)

struct vfio_device_detach_iommufd_pt {	/* 8 bytes; >= 6.15 appends u32 pasid */
	__u32 argsz;
	__u32 flags;
};
#define VFIO_DEVICE_DETACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 20)
#endif /* VFIO_DEVICE_BIND_IOMMUFD */

#ifndef VFIO_DEVICE_BIND_FLAG_TOKEN
#define VFIO_DEVICE_BIND_FLAG_TOKEN (1 << 0)	/* >= 6.17: token_uuid_ptr is valid */
#endif

#endif /* IOASIDFS_IOMMUFD_CDEV_H */
