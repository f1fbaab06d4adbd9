/*
 * iova_table: see iova_table.h for the interface and the reasons behind the structure.
 *
 * Invariants:
 *  - entries never overlap; each is aligned to the page size at both ends;
 *  - the tree is a BST on `iova` and a max-heap on `prio` (a treap);
 *  - dirty bits and pins count in dirty pages (`dirty_page_size`, a multiple of the page size:
 *    an iommufd IOAS maps byte-granular areas but tracks dirty state per IOMMU page);
 *  - while `tracking`, every entry is aligned to the dirty page size too and has a bitmap of its
 *    dirty pages (bit i = dirty page iova + i*dirty_page_size), and every pinned page's bit is
 *    set (a pin sets it; reading with `clear` re-populates pins);
 *  - pins are a sorted array of (dirty page number, count), count >= 1;
 *  - when `ix_valid`, ix_* hold every entry in ascending order (the flat lookup index); any
 *    mutation of the entry set invalidates it.
 */
#include "iova_table.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct node {
    uint64_t iova;
    uint64_t last;
    struct node *l;
    struct node *r;
    uint64_t vaddr;
    uint64_t owner;
    uint32_t prot;
    uint32_t prio;
    uint64_t *dirty;
};

struct iova_table {
    pthread_mutex_t lock;
    struct node *root;
    uint64_t count;
    uint64_t page_size;
    uint64_t dirty_page_size;
    unsigned dshift;
    uint64_t rng;
    int tracking;

    uint64_t *pin_page;
    uint64_t *pin_cnt;
    size_t npins;
    size_t pins_cap;

    /* Flat index in Eytzinger (BFS) order, 1-based: ey_key[k] is the start of an entry, its
     * children are 2k and 2k+1. A binary search then walks forward in memory and can prefetch
     * three levels ahead, which is what makes it fast once the index outgrows the L1 cache. */
    uint64_t *ey_key;
    uint64_t *ey_last;
    struct node **ey_node;
    struct node **ix_sorted;
    size_t ix_cap;
    int ix_valid;
    uint64_t lookups_since_change;
};

/* ---------------------------------------------------------------- bit helpers (u64 words) */

static uint64_t words_for(uint64_t nbits) { return (nbits + 63) / 64; }

static void bits_set(uint64_t *w, uint64_t start, uint64_t n)
{
    while (n) {
        uint64_t b = start & 63;
        uint64_t k = 64 - b;
        if (k > n)
            k = n;
        w[start >> 6] |= (k == 64 ? ~0ull : ((1ull << k) - 1)) << b;
        start += k;
        n -= k;
    }
}

static void bits_clear(uint64_t *w, uint64_t start, uint64_t n)
{
    while (n) {
        uint64_t b = start & 63;
        uint64_t k = 64 - b;
        if (k > n)
            k = n;
        w[start >> 6] &= ~((k == 64 ? ~0ull : ((1ull << k) - 1)) << b);
        start += k;
        n -= k;
    }
}

/* k (1..64) bits of s starting at bit off, in the low bits of the result. */
static uint64_t bits_get(const uint64_t *s, uint64_t off, unsigned k)
{
    uint64_t i = off >> 6, b = off & 63;
    uint64_t v = s[i] >> b;
    if (b && b + k > 64)
        v |= s[i + 1] << (64 - b);
    if (k < 64)
        v &= (1ull << k) - 1;
    return v;
}

/* dst[doff .. doff+n) |= src[soff .. soff+n) */
static void bits_or(uint64_t *dst, uint64_t doff, const uint64_t *src, uint64_t soff, uint64_t n)
{
    while (n) {
        uint64_t b = doff & 63;
        uint64_t k = 64 - b;
        if (k > n)
            k = n;
        dst[doff >> 6] |= bits_get(src, soff, (unsigned)k) << b;
        doff += k;
        soff += k;
        n -= k;
    }
}

/* ---------------------------------------------------------------- treap */

static uint32_t next_prio(iova_table *t)
{
    /* xorshift64*: any fixed seed gives expected O(log n) depth, since priorities do not depend
     * on the keys a client chooses. */
    t->rng ^= t->rng >> 12;
    t->rng ^= t->rng << 25;
    t->rng ^= t->rng >> 27;
    return (uint32_t)((t->rng * 0x2545F4914F6CDD1Dull) >> 32);
}

/* Dirty pages of an entry (aligned to the dirty page size while tracking). */
static uint64_t node_pages(const iova_table *t, const struct node *n)
{
    return ((n->last - n->iova) >> t->dshift) + 1;
}

/* l: entries with iova < key; r: the others. */
static void split(struct node *n, uint64_t key, struct node **l, struct node **r)
{
    while (n) {
        if (n->iova < key) {
            *l = n;
            l = &n->r;
            n = n->r;
        } else {
            *r = n;
            r = &n->l;
            n = n->l;
        }
    }
    *l = NULL;
    *r = NULL;
}

/* Every entry of a is below every entry of b. */
static struct node *merge(struct node *a, struct node *b)
{
    struct node *root = NULL, **link = &root;
    while (a && b) {
        if (a->prio > b->prio) {
            *link = a;
            link = &a->r;
            a = a->r;
        } else {
            *link = b;
            link = &b->l;
            b = b->l;
        }
    }
    *link = a ? a : b;
    return root;
}

static void insert(iova_table *t, struct node *n)
{
    struct node *l, *r;
    split(t->root, n->iova, &l, &r);
    t->root = merge(merge(l, n), r);
    t->count++;
    t->ix_valid = 0;
    t->lookups_since_change = 0;
}

/* The entry containing x, by walking the tree. */
static struct node *tree_find(const struct node *n, uint64_t x)
{
    while (n) {
        if (x < n->iova)
            n = n->l;
        else if (x > n->last)
            n = n->r;
        else
            return (struct node *)n;
    }
    return NULL;
}

/* The first entry ending at or after x. */
static struct node *ceil_node(const struct node *n, uint64_t x)
{
    const struct node *best = NULL;
    while (n) {
        if (n->last >= x) {
            best = n;
            n = n->l;
        } else {
            n = n->r;
        }
    }
    return (struct node *)best;
}

static void free_nodes(struct node *n)
{
    while (n) {
        struct node *r = n->r;
        free_nodes(n->l);
        free(n->dirty);
        free(n);
        n = r;
    }
}

/* Visits the entries sharing a byte with [iova, last] in ascending order. */
static void collect(const struct node *n, uint64_t iova, uint64_t last, struct iova_mapping *out,
                    size_t cap, size_t *k)
{
    while (n) {
        if (n->iova > iova)
            collect(n->l, iova, last, out, cap, k);
        if (n->iova <= last && n->last >= iova) {
            if (*k < cap) {
                out[*k].iova = n->iova;
                out[*k].last = n->last;
                out[*k].vaddr = n->vaddr;
                out[*k].owner = n->owner;
                out[*k].prot = n->prot;
            }
            (*k)++;
        }
        if (n->last >= last)
            break;
        n = n->r;
    }
}

/* ---------------------------------------------------------------- flat lookup index */

static void index_sorted(const struct node *n, struct node **out, size_t *k)
{
    while (n) {
        index_sorted(n->l, out, k);
        out[(*k)++] = (struct node *)n;
        n = n->r;
    }
}

static size_t index_place(iova_table *t, size_t i, size_t k)
{
    if (k <= t->count) {
        i = index_place(t, i, 2 * k);
        t->ey_key[k] = t->ix_sorted[i]->iova;
        t->ey_last[k] = t->ix_sorted[i]->last;
        t->ey_node[k] = t->ix_sorted[i];
        i = index_place(t, i + 1, 2 * k + 1);
    }
    return i;
}

static void index_build(iova_table *t)
{
    size_t k = 0;
    if (t->ix_cap < t->count + 1) {
        size_t cap = t->count + t->count / 2 + 16;
        /* Cache-line aligned so that ey_key[8k .. 8k+7] (the great-grandchildren of k) share a
         * line: one prefetch covers them. (Prefetching past the end is harmless: it never faults.) */
        size_t bytes = (cap * 8 + 63) & ~(size_t)63;
        uint64_t *key = aligned_alloc(64, bytes);
        uint64_t *last = malloc(cap * sizeof *last);
        struct node **node = malloc(cap * sizeof *node);
        struct node **sorted = malloc(cap * sizeof *sorted);
        if (!key || !last || !node || !sorted) {
            free(key);
            free(last);
            free(node);
            free(sorted);
            return;
        }
        free(t->ey_key);
        free(t->ey_last);
        free(t->ey_node);
        free(t->ix_sorted);
        t->ey_key = key;
        t->ey_last = last;
        t->ey_node = node;
        t->ix_sorted = sorted;
        t->ix_cap = cap;
    }
    index_sorted(t->root, t->ix_sorted, &k);
    index_place(t, 0, 1);
    t->ix_valid = 1;
}

/* The entry containing x. Walks the tree until enough lookups have happened since the last change
 * of the entry set to pay for building the flat index (count/4 of them: building is O(n), so
 * each lookup pays O(1) amortised for it and O(log n) either way). */
static struct node *locate(iova_table *t, uint64_t x)
{
    if (!t->ix_valid) {
        if (++t->lookups_since_change < 64 + t->count / 4)
            return tree_find(t->root, x);
        index_build(t);
        if (!t->ix_valid)
            return tree_find(t->root, x);
    }
    /* Descend: right when the key is <= x. The entry we want is the last key <= x, i.e. the
     * node of the last right turn: strip the trailing left turns and that turn itself. */
    const uint64_t *key = t->ey_key;
    size_t n = t->count, k = 1;
    while (k <= n) {
        __builtin_prefetch(key + 8 * k);
        k = 2 * k + (key[k] <= x);
    }
    k >>= __builtin_ctzll(k) + 1;
    if (k == 0 || t->ey_last[k] < x)
        return NULL;
    return t->ey_node[k];
}

static void changed(iova_table *t)
{
    t->ix_valid = 0;
    t->lookups_since_change = 0;
}

/* ---------------------------------------------------------------- pins */

/* First index whose page is >= page. */
static size_t pins_lower(const iova_table *t, uint64_t page)
{
    size_t lo = 0, hi = t->npins;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->pin_page[mid] < page)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* First index whose page is > page. */
static size_t pins_upper(const iova_table *t, uint64_t page)
{
    size_t lo = 0, hi = t->npins;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->pin_page[mid] <= page)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void pins_remove_range(iova_table *t, uint64_t p0, uint64_t p1)
{
    size_t lo = pins_lower(t, p0), hi = pins_upper(t, p1);
    if (hi > lo) {
        memmove(t->pin_page + lo, t->pin_page + hi, (t->npins - hi) * sizeof *t->pin_page);
        memmove(t->pin_cnt + lo, t->pin_cnt + hi, (t->npins - hi) * sizeof *t->pin_cnt);
        t->npins -= hi - lo;
    }
}

/* Sets the bits of the pinned pages of [s, e] (inside entry n) in n's bitmap. */
static void pins_populate(iova_table *t, struct node *n, uint64_t s, uint64_t e)
{
    size_t i = pins_lower(t, s >> t->dshift), end = pins_upper(t, e >> t->dshift);
    for (; i < end; i++)
        bits_set(n->dirty, ((t->pin_page[i] << t->dshift) - n->iova) >> t->dshift, 1);
}

/* ---------------------------------------------------------------- argument checks */

static int aligned_range(uint64_t iova, uint64_t last, uint64_t unit)
{
    uint64_t mask = unit - 1;
    return last >= iova && (iova & mask) == 0 && (last & mask) == mask;
}

/* A non-empty range aligned to the page size (maps, unmaps). */
static int range_ok(const iova_table *t, uint64_t iova, uint64_t last)
{
    return aligned_range(iova, last, t->page_size);
}

/* A non-empty range aligned to the dirty page size (dirty bitmaps, pins). */
static int drange_ok(const iova_table *t, uint64_t iova, uint64_t last)
{
    return aligned_range(iova, last, t->dirty_page_size);
}

/* ---------------------------------------------------------------- public interface */

iova_table *iova_table_new(uint64_t page_size, uint64_t dirty_page_size)
{
    if (page_size == 0 || (page_size & (page_size - 1)) || dirty_page_size < page_size ||
        (dirty_page_size & (dirty_page_size - 1)))
        return NULL;
    iova_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    if (pthread_mutex_init(&t->lock, NULL)) {
        free(t);
        return NULL;
    }
    t->page_size = page_size;
    t->dirty_page_size = dirty_page_size;
    t->dshift = (unsigned)__builtin_ctzll(dirty_page_size);
    t->rng = 0x9E3779B97F4A7C15ull;
    return t;
}

void iova_table_free(iova_table *t)
{
    if (!t)
        return;
    free_nodes(t->root);
    free(t->pin_page);
    free(t->pin_cnt);
    free(t->ey_key);
    free(t->ey_last);
    free(t->ey_node);
    free(t->ix_sorted);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

uint64_t iova_table_count(iova_table *t)
{
    pthread_mutex_lock(&t->lock);
    uint64_t n = t->count;
    pthread_mutex_unlock(&t->lock);
    return n;
}

int iova_table_map(iova_table *t, uint64_t iova, uint64_t last, uint64_t vaddr, uint32_t prot,
                   uint64_t owner)
{
    int ret = 0;
    pthread_mutex_lock(&t->lock);
    if (!range_ok(t, iova, last) || prot > (IOVA_PROT_READ | IOVA_PROT_WRITE) ||
        vaddr > UINT64_MAX - (last - iova)) {
        ret = -EINVAL;
        goto out;
    }
    struct node *c = ceil_node(t->root, iova);
    if (c && c->iova <= last) {
        ret = -EEXIST;
        goto out;
    }
    struct node *n = calloc(1, sizeof *n);
    if (!n) {
        ret = -ENOMEM;
        goto out;
    }
    n->iova = iova;
    n->last = last;
    n->vaddr = vaddr;
    n->owner = owner;
    n->prot = prot;
    n->prio = next_prio(t);
    if (t->tracking) {
        uint64_t pages = node_pages(t, n);
        if (pages > IOVA_DIRTY_PAGES_MAX || !drange_ok(t, iova, last)) {
            free(n);
            ret = -EINVAL;
            goto out;
        }
        n->dirty = calloc(words_for(pages), sizeof(uint64_t));
        if (!n->dirty) {
            free(n);
            ret = -ENOMEM;
            goto out;
        }
    }
    insert(t, n);
out:
    pthread_mutex_unlock(&t->lock);
    return ret;
}

/* Storage for splitting the entry that straddles x, allocated before anything changes. */
struct cut {
    struct node *e;      /* the entry containing x with e->iova < x, or NULL */
    struct node *piece;  /* becomes [x, e->last] */
    uint64_t *bits;
};

static int cut_prepare(iova_table *t, uint64_t x, struct cut *c)
{
    c->e = tree_find(t->root, x);
    c->piece = NULL;
    c->bits = NULL;
    if (!c->e || c->e->iova == x) {
        c->e = NULL;
        return 0;
    }
    if (t->tracking && (x & (t->dirty_page_size - 1))) {
        c->e = NULL;   /* a dirty page cannot be split between two entries */
        return -EINVAL;
    }
    c->piece = calloc(1, sizeof *c->piece);
    if (!c->piece)
        return -ENOMEM;
    if (t->tracking) {
        c->bits = calloc(words_for(((c->e->last - x) >> t->dshift) + 1), sizeof(uint64_t));
        if (!c->bits) {
            free(c->piece);
            c->piece = NULL;
            return -ENOMEM;
        }
    }
    return 0;
}

/* Splits the entry containing x (which may be e itself or, when both cuts fall in one entry,
 * the piece the first cut made) so that one entry ends at x-1 and another starts at x. */
static void cut_apply(iova_table *t, uint64_t x, struct cut *c)
{
    if (!c->e)
        return;
    struct node *e = tree_find(t->root, x);
    struct node *p = c->piece;
    uint64_t off = (x - e->iova) >> t->dshift;
    uint64_t pages = ((e->last - x) >> t->dshift) + 1;
    p->iova = x;
    p->last = e->last;
    p->vaddr = e->vaddr + (x - e->iova);
    p->owner = e->owner;
    p->prot = e->prot;
    p->prio = next_prio(t);
    if (e->dirty) {
        p->dirty = c->bits;
        bits_or(p->dirty, 0, e->dirty, off, pages);
        bits_clear(e->dirty, off, pages);
    } else {
        free(c->bits);
    }
    e->last = x - 1;
    insert(t, p);
}

int64_t iova_table_unmap(iova_table *t, uint64_t iova, uint64_t last, struct iova_mapping *out,
                         size_t cap)
{
    int64_t ret;
    struct cut lo = {0}, hi = {0};
    pthread_mutex_lock(&t->lock);
    if (!range_ok(t, iova, last)) {
        ret = -EINVAL;
        goto out;
    }
    size_t n = 0;
    collect(t->root, iova, last, NULL, 0, &n);
    if (n == 0 || n > cap) {
        ret = (int64_t)n;
        goto out;
    }
    if ((ret = cut_prepare(t, iova, &lo)) != 0 ||
        (last != UINT64_MAX && (ret = cut_prepare(t, last + 1, &hi)) != 0)) {
        if (lo.piece) {
            free(lo.piece);
            free(lo.bits);
        }
        goto out;
    }
    cut_apply(t, iova, &lo);
    if (last != UINT64_MAX)
        cut_apply(t, last + 1, &hi);

    struct node *l, *mr, *m, *r = NULL;
    split(t->root, iova, &l, &mr);
    if (last == UINT64_MAX)
        m = mr;
    else
        split(mr, last + 1, &m, &r);
    size_t k = 0;
    collect(m, iova, last, out, cap, &k);
    free_nodes(m);
    t->root = merge(l, r);
    t->count -= k;
    pins_remove_range(t, iova >> t->dshift, last >> t->dshift);
    changed(t);
    ret = (int64_t)k;
out:
    pthread_mutex_unlock(&t->lock);
    return ret;
}

int64_t iova_table_mappings(iova_table *t, uint64_t iova, uint64_t last, struct iova_mapping *out,
                            size_t cap)
{
    if (last < iova)
        return -EINVAL;
    pthread_mutex_lock(&t->lock);
    size_t k = 0;
    collect(t->root, iova, last, NULL, 0, &k);
    if (k <= cap) {
        k = 0;
        collect(t->root, iova, last, out, cap, &k);
    }
    pthread_mutex_unlock(&t->lock);
    return (int64_t)k;
}

int iova_table_lookup(iova_table *t, uint64_t iova, struct iova_hit *hit)
{
    pthread_mutex_lock(&t->lock);
    const struct node *n = locate(t, iova);
    if (n) {
        hit->owner = n->owner;
        hit->vaddr = n->vaddr + (iova - n->iova);
        hit->prot = n->prot;
    }
    pthread_mutex_unlock(&t->lock);
    return n != NULL;
}

/* Eytzinger descents for LANES IOVAs at once: the searches are independent, so interleaving
 * them lets the CPU wait for several cache misses at the same time instead of one after the
 * other (a single descent is a chain of dependent loads). The first floor(log2 n) levels exist
 * for every path, so all lanes take them unconditionally; the last level is partial. */
#define LANES 8

/* The entries containing x[0..LANES-1] (NULL where none), by interleaved descents. */
static void lookup_batch(const iova_table *t, const uint64_t *x, struct node **hit)
{
    const uint64_t *key = t->ey_key;
    size_t n = t->count, k[LANES];
    unsigned depth = 63u - (unsigned)__builtin_clzll((unsigned long long)n);
    for (int j = 0; j < LANES; j++)
        k[j] = 1;
    for (unsigned d = 0; d < depth; d++) {
        for (int j = 0; j < LANES; j++) {
            __builtin_prefetch(key + 8 * k[j]);
            k[j] = 2 * k[j] + (key[k[j]] <= x[j]);
        }
    }
    for (int j = 0; j < LANES; j++) {
        size_t kk = k[j];
        if (kk <= n)
            kk = 2 * kk + (key[kk] <= x[j]);
        kk >>= __builtin_ctzll(kk) + 1;
        hit[j] = kk != 0 && t->ey_last[kk] >= x[j] ? t->ey_node[kk] : NULL;
    }
}

uint64_t iova_table_count_mapped(iova_table *t, const uint64_t *iovas, size_t n)
{
    uint64_t found = 0;
    size_t i = 0;
    pthread_mutex_lock(&t->lock);
    if (!t->ix_valid && t->count && t->lookups_since_change + n >= 64 + t->count / 4)
        index_build(t);
    struct node *hit[LANES];
    if (t->ix_valid && t->count)
        for (; i + LANES <= n; i += LANES) {
            lookup_batch(t, iovas + i, hit);
            for (int j = 0; j < LANES; j++)
                found += hit[j] != NULL;
        }
    for (; i < n; i++)
        found += locate(t, iovas[i]) != NULL;
    pthread_mutex_unlock(&t->lock);
    return found;
}

static uint64_t put_hit(const struct node *e, uint64_t x, size_t i, uint64_t *owners,
                        uint64_t *vaddrs, int8_t *prots)
{
    if (!e) {
        owners[i] = 0;
        vaddrs[i] = 0;
        prots[i] = -1;
        return 0;
    }
    owners[i] = e->owner;
    vaddrs[i] = e->vaddr + (x - e->iova);
    prots[i] = (int8_t)e->prot;
    return 1;
}

uint64_t iova_table_lookup_many(iova_table *t, const uint64_t *iovas, size_t n, uint64_t *owners,
                                uint64_t *vaddrs, int8_t *prots)
{
    uint64_t found = 0;
    size_t i = 0;
    struct node *hit[LANES];
    pthread_mutex_lock(&t->lock);
    if (!t->ix_valid && t->count && t->lookups_since_change + n >= 64 + t->count / 4)
        index_build(t);
    if (t->ix_valid && t->count)
        for (; i + LANES <= n; i += LANES) {
            lookup_batch(t, iovas + i, hit);
            for (int j = 0; j < LANES; j++)
                found += put_hit(hit[j], iovas[i + j], i + j, owners, vaddrs, prots);
        }
    for (; i < n; i++)
        found += put_hit(locate(t, iovas[i]), iovas[i], i, owners, vaddrs, prots);
    pthread_mutex_unlock(&t->lock);
    return found;
}

int64_t iova_table_translate(iova_table *t, uint64_t iova, uint64_t last, uint32_t access,
                             struct iova_segment *out, size_t cap, struct iova_fault *fault)
{
    if (last < iova)
        return -EINVAL;
    int64_t ret;
    size_t k = 0;
    struct iova_segment cur = {0};
    int have = 0;
    uint64_t cursor = iova;
    pthread_mutex_lock(&t->lock);
    for (;;) {
        const struct node *e = locate(t, cursor);
        if (!e || (e->prot & access) != access) {
            fault->iova = cursor;
            fault->reason = e ? IOVA_FAULT_NO_PERMISSION : IOVA_FAULT_NOT_MAPPED;
            ret = IOVA_TRANSLATE_FAULT;
            goto out;
        }
        uint64_t end = e->last < last ? e->last : last;
        uint64_t v = e->vaddr + (cursor - e->iova);
        uint64_t vl = v + (end - cursor);
        if (have && cur.owner == e->owner && cur.vlast != UINT64_MAX && cur.vlast + 1 == v) {
            cur.vlast = vl;
        } else {
            if (have) {
                if (k < cap)
                    out[k] = cur;
                k++;
            }
            cur.owner = e->owner;
            cur.vaddr = v;
            cur.vlast = vl;
            have = 1;
        }
        if (end == last)
            break;
        cursor = end + 1;
    }
    if (k < cap)
        out[k] = cur;
    k++;
    ret = (int64_t)k;
out:
    pthread_mutex_unlock(&t->lock);
    return ret;
}

static void free_bitmaps(struct node *n)
{
    while (n) {
        free_bitmaps(n->l);
        free(n->dirty);
        n->dirty = NULL;
        n = n->r;
    }
}

/* 0, or -EINVAL if an entry is too large for a bitmap. */
static int check_bitmap_sizes(const iova_table *t, const struct node *n)
{
    while (n) {
        if (check_bitmap_sizes(t, n->l))
            return -EINVAL;
        if (node_pages(t, n) > IOVA_DIRTY_PAGES_MAX || !drange_ok(t, n->iova, n->last))
            return -EINVAL;
        n = n->r;
    }
    return 0;
}

static int alloc_bitmaps(iova_table *t, struct node *n)
{
    while (n) {
        if (alloc_bitmaps(t, n->l))
            return -ENOMEM;
        n->dirty = calloc(words_for(node_pages(t, n)), sizeof(uint64_t));
        if (!n->dirty)
            return -ENOMEM;
        pins_populate(t, n, n->iova, n->last);
        n = n->r;
    }
    return 0;
}

int iova_table_start_dirty(iova_table *t)
{
    int ret = 0;
    pthread_mutex_lock(&t->lock);
    if (t->tracking)
        goto out;
    ret = check_bitmap_sizes(t, t->root);
    if (ret)
        goto out;
    ret = alloc_bitmaps(t, t->root);
    if (ret) {
        free_bitmaps(t->root);
        goto out;
    }
    t->tracking = 1;
out:
    pthread_mutex_unlock(&t->lock);
    return ret;
}

void iova_table_stop_dirty(iova_table *t)
{
    pthread_mutex_lock(&t->lock);
    free_bitmaps(t->root);
    t->tracking = 0;
    pthread_mutex_unlock(&t->lock);
}

int iova_table_dirty_tracking(iova_table *t)
{
    pthread_mutex_lock(&t->lock);
    int on = t->tracking;
    pthread_mutex_unlock(&t->lock);
    return on;
}

/* Sets the bits of the pages of [iova, last] (byte granular) in the entries they fall in. */
static void mark_range(iova_table *t, uint64_t iova, uint64_t last)
{
    struct node *e = ceil_node(t->root, iova);
    while (e && e->iova <= last) {
        uint64_t s = e->iova > iova ? e->iova : iova;
        uint64_t en = e->last < last ? e->last : last;
        uint64_t p0 = (s - e->iova) >> t->dshift, p1 = (en - e->iova) >> t->dshift;
        bits_set(e->dirty, p0, p1 - p0 + 1);
        if (e->last >= last)
            break;
        e = ceil_node(t->root, e->last + 1);
    }
}

void iova_table_mark_dirty(iova_table *t, uint64_t iova, uint64_t last)
{
    if (last < iova)
        return;
    pthread_mutex_lock(&t->lock);
    if (t->tracking)
        mark_range(t, iova, last);
    pthread_mutex_unlock(&t->lock);
}

int iova_table_read_dirty(iova_table *t, uint64_t iova, uint64_t last, int clear, int all_mapped,
                          uint64_t *bitmap, size_t nwords)
{
    int ret = 0;
    pthread_mutex_lock(&t->lock);
    if (!t->tracking || !drange_ok(t, iova, last)) {
        ret = -EINVAL;
        goto out;
    }
    uint64_t pages = ((last - iova) >> t->dshift) + 1;
    if (pages > IOVA_DIRTY_PAGES_MAX || nwords < words_for(pages)) {
        ret = -EINVAL;
        goto out;
    }
    struct node *e = ceil_node(t->root, iova);
    while (e && e->iova <= last) {
        uint64_t s = e->iova > iova ? e->iova : iova;
        uint64_t en = e->last < last ? e->last : last;
        uint64_t src = (s - e->iova) >> t->dshift;
        uint64_t cnt = ((en - s) >> t->dshift) + 1;
        uint64_t dst = (s - iova) >> t->dshift;
        if (all_mapped)
            bits_set(bitmap, dst, cnt);
        else
            bits_or(bitmap, dst, e->dirty, src, cnt);
        if (clear) {
            bits_clear(e->dirty, src, cnt);
            pins_populate(t, e, s, en);
        }
        if (e->last >= last)
            break;
        e = ceil_node(t->root, e->last + 1);
    }
out:
    pthread_mutex_unlock(&t->lock);
    return ret;
}

int iova_table_pin(iova_table *t, uint64_t iova, uint64_t last, uint32_t access)
{
    int ret = 0;
    pthread_mutex_lock(&t->lock);
    if (!drange_ok(t, iova, last) || access > (IOVA_PROT_READ | IOVA_PROT_WRITE)) {
        ret = -EINVAL;
        goto out;
    }
    /* Check every page first, in address order, as the kernel's loop meets them. */
    for (uint64_t cursor = iova;;) {
        const struct node *e = tree_find(t->root, cursor);
        if (!e) {
            ret = -EINVAL;
            goto out;
        }
        if ((e->prot & access) != access) {
            ret = -EPERM;
            goto out;
        }
        if (e->last >= last)
            break;
        cursor = e->last + 1;
    }
    uint64_t p0 = iova >> t->dshift, p1 = last >> t->dshift;
    uint64_t add = p1 - p0 + 1;
    if (add > SIZE_MAX / 2 - t->npins) {
        ret = -ENOMEM;
        goto out;
    }
    if (t->npins + add > t->pins_cap) {
        size_t cap = t->npins + (size_t)add + t->npins / 2 + 16;
        uint64_t *a = realloc(t->pin_page, cap * sizeof *a);
        if (!a) {
            ret = -ENOMEM;
            goto out;
        }
        t->pin_page = a;
        a = realloc(t->pin_cnt, cap * sizeof *a);
        if (!a) {
            ret = -ENOMEM;
            goto out;
        }
        t->pin_cnt = a;
        t->pins_cap = cap;
    }
    /* Merge the range's pages into the sorted array in place: move the tail right to make room
     * for one slot per page of the range, then fill the slots from the back, reading the range's
     * old entries (which sit at [lo, hi), never overtaken by the write position) as we go. */
    size_t lo = pins_lower(t, p0), hi = pins_upper(t, p1);
    size_t tail = t->npins - hi;
    memmove(t->pin_page + lo + add, t->pin_page + hi, tail * sizeof *t->pin_page);
    memmove(t->pin_cnt + lo + add, t->pin_cnt + hi, tail * sizeof *t->pin_cnt);
    size_t j = hi;
    for (size_t pos = lo + (size_t)add; pos-- > lo;) {
        uint64_t page = p0 + (pos - lo);
        uint64_t cnt = 1;
        if (j > lo && t->pin_page[j - 1] == page) {
            cnt = t->pin_cnt[j - 1] + 1;
            j--;
        }
        t->pin_page[pos] = page;
        t->pin_cnt[pos] = cnt;
    }
    t->npins += (size_t)add - (hi - lo);
    if (t->tracking)
        mark_range(t, iova, last);
    ret = 0;
out:
    pthread_mutex_unlock(&t->lock);
    return ret;
}

int iova_table_unpin(iova_table *t, uint64_t iova, uint64_t last)
{
    int ret = 0;
    pthread_mutex_lock(&t->lock);
    if (!drange_ok(t, iova, last)) {
        ret = -EINVAL;
        goto out;
    }
    size_t lo = pins_lower(t, iova >> t->dshift), hi = pins_upper(t, last >> t->dshift);
    size_t w = lo;
    for (size_t i = lo; i < hi; i++) {
        if (--t->pin_cnt[i]) {
            t->pin_page[w] = t->pin_page[i];
            t->pin_cnt[w] = t->pin_cnt[i];
            w++;
        }
    }
    if (w != hi) {
        memmove(t->pin_page + w, t->pin_page + hi, (t->npins - hi) * sizeof *t->pin_page);
        memmove(t->pin_cnt + w, t->pin_cnt + hi, (t->npins - hi) * sizeof *t->pin_cnt);
        t->npins -= hi - w;
    }
out:
    pthread_mutex_unlock(&t->lock);
    return ret;
}

uint64_t iova_table_pin_count(iova_table *t, uint64_t iova)
{
    pthread_mutex_lock(&t->lock);
    uint64_t page = iova >> t->dshift, c = 0;
    size_t i = pins_lower(t, page);
    if (i < t->npins && t->pin_page[i] == page)
        c = t->pin_cnt[i];
    pthread_mutex_unlock(&t->lock);
    return c;
}
