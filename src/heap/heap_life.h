/* The heap's part in the library's life cycle (api.c). */
#ifndef IOA_HEAP_LIFE_H
#define IOA_HEAP_LIFE_H

#include "ioalloc.h"

#include <stddef.h>

void ioa__heap_init(const struct ioa_config *cfg);
/* Retires every span, counting the objects still allocated as leaks. */
void ioa__heap_fini(void);
/* Strict mode: applies the calling thread's batched frees (ioa_quiesce). */
void ioa__heap_flush_mine(void);
/* @size bytes aligned to @align on @node (IOA_NODE_ANY: the thread's). */
void *ioa__heap_alloc_aligned(size_t size, size_t align, int node);

void ioa__heap_fork_prepare(void);
/* Around other libraries' atfork handlers (heap.c, held): opened at the end
 * of the library's prepare handler, closed at the end of its parent and child
 * handlers, once its locks are free; and, under LD_PRELOAD, around glibc's
 * registration of atfork handlers (preload/atfork.c). Not nested. */
void ioa__heap_fork_window_open(void);
void ioa__heap_fork_window_close(void);
void ioa__heap_fork_parent(void);
void ioa__heap_fork_child(void);
void ioa__extent_fork_prepare(void);
void ioa__extent_fork_parent(void);
void ioa__extent_fork_child(void);
void ioa__span_fork_prepare(void);
void ioa__span_fork_parent(void);
void ioa__span_fork_child(void);

#endif
