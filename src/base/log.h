/* Diagnostics: formatted into a stack buffer and written to stderr with one
 * write(2), so logging never allocates (it must work while bootstrapping).
 * A message is one line: control characters in it print as '?'. */
#ifndef IOA_LOG_H
#define IOA_LOG_H

#define IOA_EXPORT __attribute__((visibility("default")))

enum ioa__log_level { IOA_LOG_ERROR, IOA_LOG_WARN, IOA_LOG_INFO, IOA_LOG_DEBUG };

/* Messages above this level are dropped; set from IOALLOC_VERBOSE. */
void ioa__log_set_verbosity(int verbose);

__attribute__((format(printf, 2, 3)))
void ioa__log(enum ioa__log_level level, const char *fmt, ...);

/* Held error messages: whole lines; those that do not fit are lost. On the
 * caller's stack, so that the library's thread-local storage stays small
 * (it is initial-exec: a late dlopen() of the library must find room for
 * it in glibc's static TLS surplus; test_dlopen_late). */
struct ioa__log_held {
	struct ioa__log_held *outer;
	unsigned len;
	char text[1024];
};

/* Holds back the calling thread's error messages in @h until
 * ioa__log_release(), which prints them (@print 1) or drops them (0): for
 * a step that is tried again, whose first failure is no failure of the
 * call. Warnings and info are never held. A hold inside a hold holds its
 * own messages (a signal handler's call, say); the release of the inner
 * one comes first. */
extern __thread struct ioa__log_held *ioa__log_holding /* innermost hold, or NULL */
	__attribute__((tls_model("initial-exec"), visibility("hidden")));
void ioa__log_print_held(const struct ioa__log_held *h);
/* Inline: every refill of a span holds (malloc's slow path, about 3 % of
 * strict mode's larson as calls). */
static inline void ioa__log_hold(struct ioa__log_held *h)
{
	h->outer = ioa__log_holding;
	h->len = 0;
	ioa__log_holding = h;
}
static inline void ioa__log_release(struct ioa__log_held *h, int print)
{
	ioa__log_holding = h->outer;
	if (print && h->len)
		ioa__log_print_held(h);
}

/* The symbolic name of @err ("EINVAL"), for messages that give errno. */
const char *ioa__errno_name(int err);
/* errno @err's description, untranslated: ioa__errno_text() may malloc (a
 * message catalogue's translation), and under LD_PRELOAD that malloc comes
 * back into the library, while some callers hold a lock it needs. */
const char *ioa__errno_text(int err);

#define ioa__err(...) ioa__log(IOA_LOG_ERROR, __VA_ARGS__)
/* Set in the preload library (a strong definition there), 0 elsewhere. */
extern int ioa__preloaded;
/* A request refused for want of memory or address space (ENOMEM): an error,
 * but an info line (IOALLOC_VERBOSE=1) in the preload library, whose malloc
 * family fails silently as glibc's does: a program that tries a huge
 * malloc and copes with NULL prints the same under LD_PRELOAD as without. */
#define ioa__err_nomem(...) ioa__log(ioa__preloaded ? IOA_LOG_INFO : IOA_LOG_ERROR, __VA_ARGS__)
/* The malloc family's call the program made, for its messages: the C
 * library's name under LD_PRELOAD ("free": a preloaded program's direct
 * ioa_free() is named so too), the library's own elsewhere ("ioa_free"). */
#define ioa__family_call(libc, own) (ioa__preloaded ? (libc) : (own))
/* The call a free serves when it is not free() (the preload library's
 * realloc(p, 0), which frees as glibc's does), or NULL: the calling
 * thread's, set around that free only. */
extern __thread const char *ioa__freeing_for
	__attribute__((tls_model("initial-exec"), visibility("hidden")));
#define IOA_FREE_CALL (ioa__freeing_for ? ioa__freeing_for : ioa__family_call("free", "ioa_free"))
#define IOA_REALLOC_CALL ioa__family_call("realloc", "ioa_realloc")
#define IOA_USABLE_SIZE_CALL ioa__family_call("malloc_usable_size", "ioa_usable_size")
#define ioa__warn(...) ioa__log(IOA_LOG_WARN, __VA_ARGS__)
#define ioa__info(...) ioa__log(IOA_LOG_INFO, __VA_ARGS__)
#define ioa__debug(...) ioa__log(IOA_LOG_DEBUG, __VA_ARGS__)

#endif
