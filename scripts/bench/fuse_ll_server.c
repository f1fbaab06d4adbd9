/*
 * Reference FUSE server for scripts/bench_ioctl: the least a C server over libfuse3's
 * low-level API does to answer one ioctl, to compare our Python daemon against.
 *
 * Serves a root directory holding one regular file, "dev". On that file, the ioctl
 * VFIO_GET_API_VERSION (_IO(';', 100) = 0x3B64) returns 0 (fuse_reply_ioctl); every other
 * ioctl fails with ENOTTY. Runs single-threaded (fuse_session_loop), like our one reader.
 * Opens get direct_io and noflush, as ioasidfs gives its nodes.
 *
 *   fuse_ll_server MOUNTPOINT     (foreground; SIGINT/SIGTERM or fusermount3 -u stops it)
 *
 * Mounts with fsname=bench_c,subtype=bench_c, so /proc/self/mountinfo shows "fuse.bench_c".
 * Build: gcc -O2 -Wall fuse_ll_server.c $(pkg-config --cflags --libs fuse3)
 */
#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define VFIO_GET_API_VERSION 0x3B64u
#define FILE_INO 2
static const char file_name[] = "dev";

static int fill_stat(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else if (ino == FILE_INO) {
		st->st_mode = S_IFREG | 0666;
		st->st_nlink = 1;
	} else {
		return -1;
	}
	return 0;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;

	if (parent != FUSE_ROOT_ID || strcmp(name, file_name) != 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	memset(&e, 0, sizeof(e));
	e.ino = FILE_INO;
	e.attr_timeout = 1.0;
	e.entry_timeout = 1.0;
	fill_stat(FILE_INO, &e.attr);
	fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	if (fill_stat(ino, &st) != 0)
		fuse_reply_err(req, ENOENT);
	else
		fuse_reply_attr(req, &st, 1.0);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ino != FILE_INO) {
		fuse_reply_err(req, ino == FUSE_ROOT_ID ? EISDIR : ENOENT);
		return;
	}
	fi->direct_io = 1;
	fi->noflush = 1;
	fuse_reply_open(req, fi);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void op_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
		     struct fuse_file_info *fi, unsigned flags, const void *in_buf,
		     size_t in_bufsz, size_t out_bufsz)
{
	(void)arg; (void)fi; (void)flags; (void)in_buf; (void)in_bufsz; (void)out_bufsz;
	if (ino == FILE_INO && cmd == VFIO_GET_API_VERSION)
		fuse_reply_ioctl(req, 0, NULL, 0);
	else
		fuse_reply_err(req, ENOTTY);
}

static const struct fuse_lowlevel_ops ops = {
	.lookup = op_lookup,
	.getattr = op_getattr,
	.open = op_open,
	.release = op_release,
	.ioctl = op_ioctl,
};

int main(int argc, char *argv[])
{
	char *fuse_argv[] = { argv[0], "-o", "fsname=bench_c,subtype=bench_c", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, fuse_argv);
	struct fuse_session *se;
	int ret = 1;

	if (argc != 2) {
		fprintf(stderr, "usage: %s MOUNTPOINT\n", argv[0]);
		return 2;
	}
	se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (se == NULL)
		return 1;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_destroy;
	if (fuse_session_mount(se, argv[1]) != 0)
		goto out_signals;
	fprintf(stderr, "fuse_ll_server: serving %s\n", argv[1]);
	ret = fuse_session_loop(se) != 0;
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_destroy:
	fuse_session_destroy(se);
	return ret;
}
