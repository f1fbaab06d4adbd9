"""cffi (API mode) build of the C translation table: ``ioasidfs._iova_table``.

Run by setuptools at ``pip install`` time through ``cffi_modules`` in setup.py; ``python
cext/build_iova_table.py`` builds it in place for development. The declarations below are the
part of cext/iova_table.h that Python calls; cffi checks them against the header when compiling.
"""
from __future__ import annotations

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

CDEF = """
#define IOVA_PROT_READ 1
#define IOVA_PROT_WRITE 2
#define IOVA_FAULT_NOT_MAPPED 1
#define IOVA_FAULT_NO_PERMISSION 2
#define IOVA_TRANSLATE_FAULT -1000

typedef struct iova_table iova_table;
struct iova_mapping { uint64_t iova; uint64_t last; uint64_t vaddr; uint64_t owner; uint32_t prot; };
struct iova_hit { uint64_t owner; uint64_t vaddr; uint32_t prot; };
struct iova_segment { uint64_t owner; uint64_t vaddr; uint64_t vlast; };
struct iova_fault { uint64_t iova; int reason; };

iova_table *iova_table_new(uint64_t page_size, uint64_t dirty_page_size);
void iova_table_free(iova_table *t);
uint64_t iova_table_count(iova_table *t);
int iova_table_map(iova_table *t, uint64_t iova, uint64_t last, uint64_t vaddr, uint32_t prot,
                   uint64_t owner);
int64_t iova_table_unmap(iova_table *t, uint64_t iova, uint64_t last, struct iova_mapping *out,
                         size_t cap);
int64_t iova_table_mappings(iova_table *t, uint64_t iova, uint64_t last, struct iova_mapping *out,
                            size_t cap);
int iova_table_lookup(iova_table *t, uint64_t iova, struct iova_hit *hit);
uint64_t iova_table_count_mapped(iova_table *t, const uint64_t *iovas, size_t n);
uint64_t iova_table_lookup_many(iova_table *t, const uint64_t *iovas, size_t n, uint64_t *owners,
                                uint64_t *vaddrs, int8_t *prots);
int64_t iova_table_translate(iova_table *t, uint64_t iova, uint64_t last, uint32_t access,
                             struct iova_segment *out, size_t cap, struct iova_fault *fault);
int iova_table_start_dirty(iova_table *t);
void iova_table_stop_dirty(iova_table *t);
int iova_table_dirty_tracking(iova_table *t);
void iova_table_mark_dirty(iova_table *t, uint64_t iova, uint64_t last);
int iova_table_read_dirty(iova_table *t, uint64_t iova, uint64_t last, int clear, int all_mapped,
                          uint64_t *bitmap, size_t nwords);
int iova_table_pin(iova_table *t, uint64_t iova, uint64_t last, uint32_t access);
int iova_table_unpin(iova_table *t, uint64_t iova, uint64_t last);
uint64_t iova_table_pin_count(iova_table *t, uint64_t iova);
"""



def make_builder(root: str = "") -> FFI:
    """The builder; source paths are relative to the project root (what setuptools wants) unless
    ``root`` is given (a build from anywhere else)."""
    builder = FFI()
    builder.cdef(CDEF)
    cext = f"{root}/cext" if root else "cext"
    builder.set_source(
        "ioasidfs._iova_table",
        '#include "iova_table.h"',
        sources=[f"{cext}/iova_table.c"],
        include_dirs=[cext],
        extra_compile_args=["-O2", "-std=c11", "-D_GNU_SOURCE"],
        libraries=["pthread"],
    )
    return builder


ffibuilder = make_builder()

if __name__ == "__main__":
    # A development build in place: ioasidfs/_iova_table*.so next to the package's sources.
    root = HERE.parent
    out = make_builder(str(root)).compile(tmpdir=str(root / "build" / "cffi"))
    target = root / "ioasidfs" / Path(out).name
    Path(out).replace(target)
    print(target)
