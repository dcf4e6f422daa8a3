/*
 * The tests' own assertions. Every CHECK counts one pass or one failure and
 * reports a failure as file:line and the expression; check_done() prints the
 * closing "N passed, N failed" line and gives main's exit status (0, 1, or
 * CHECK_SKIP when nothing could run). Safe to use from several threads.
 *
 * CHECK_EXIT_AT_FAILURE=1 (scripts/mutate.sh sets it) ends the program at
 * its first failure, exit status 1: a test that is going to fail fails
 * sooner, and its verdict is the same.
 *
 * Also here: a seeded random generator (CHECK_SEED=n reproduces a run), a
 * stderr capture for checking the library's messages, and a helper that
 * clears the IOALLOC_* variables a developer may have set.
 */
#ifndef CHECK_H
#define CHECK_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define CHECK_SKIP 77         /* ctest's SKIP_RETURN_CODE */
#define CHECK_MAX_REPORTS 50  /* failures printed; more are only counted */

static atomic_long check_passes, check_failures;
static int check_exit_at_failure; /* CHECK_EXIT_AT_FAILURE, read by check_start() */

/* Counts one result; prints a failure. Returns @ok so callers can bail out. */
static inline int check_result(int ok, const char *file, int line, const char *expr,
			       const char *detail)
{
	if (ok) {
		atomic_fetch_add(&check_passes, 1);
		return 1;
	}
	if (atomic_fetch_add(&check_failures, 1) < CHECK_MAX_REPORTS)
		printf("%s:%d: CHECK failed: %s%s\n", file, line, expr, detail);
	if (check_exit_at_failure) {
		printf("CHECK_EXIT_AT_FAILURE: ending at the first failure\n");
		fflush(stdout);
		_exit(1);
	}
	return 0;
}

static inline int check_eq(unsigned long long got, unsigned long long want, const char *file,
			   int line, const char *expr)
{
	char detail[160];

	snprintf(detail, sizeof(detail), " (got %lld = %#llx, expected %lld = %#llx)",
		 (long long)got, got, (long long)want, want);
	return check_result(got == want, file, line, expr, detail);
}

static inline int check_contains(const char *text, const char *needle, const char *file,
				 int line, const char *expr)
{
	char detail[1200];

	snprintf(detail, sizeof(detail), " (\"%s\" not in \"%.1000s\")", needle, text);
	return check_result(strstr(text, needle) != NULL, file, line, expr, detail);
}

#define CHECK(cond) check_result(!!(cond), __FILE__, __LINE__, #cond, "")
/* Integers of any type, compared as 64-bit values; both are printed on failure. */
#define CHECK_EQ(got, want) \
	check_eq((unsigned long long)(got), (unsigned long long)(want), __FILE__, __LINE__, \
		 #got " == " #want)
#define CHECK_CONTAINS(text, needle) \
	check_contains((text), (needle), __FILE__, __LINE__, #text " contains " #needle)

/* Prints a note that is not a result (why a part was skipped, for instance). */
__attribute__((format(printf, 1, 2))) static inline void check_note(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	printf("note: ");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
}

/* ---- random numbers: xorshift64*, one state per thread ------------------ */

static uint64_t check_seed;
static uint64_t check_rng = 1;

static inline uint64_t rnd_next(uint64_t *state)
{
	*state ^= *state >> 12;
	*state ^= *state << 25;
	*state ^= *state >> 27;
	return *state * 0x2545f4914f6cdd1dull;
}

/* A value in [0, n) from the main thread's generator; n > 0. */
static inline uint64_t rnd(uint64_t n)
{
	return rnd_next(&check_rng) % n;
}

/* A state for thread @i, derived from the run's seed. */
static inline uint64_t rnd_thread_state(unsigned i)
{
	return (check_seed ^ (0x9e3779b97f4a7c15ull * (i + 1))) | 1;
}

/* ---- environment --------------------------------------------------------- */

extern char **environ;

/* Unsets every IOALLOC_* variable, so a developer's settings change nothing. */
static inline void check_clear_ioalloc_env(void)
{
	char name[256];

	for (int again = 1; again;) {
		again = 0;
		for (char **env = environ; env && *env; env++) {
			const char *eq = strchr(*env, '=');
			size_t len = eq ? (size_t)(eq - *env) : strlen(*env);

			if (strncmp(*env, "IOALLOC_", 8) == 0 && len < sizeof(name)) {
				memcpy(name, *env, len);
				name[len] = '\0';
				unsetenv(name); /* changes environ: start over */
				again = 1;
				break;
			}
		}
	}
}

/* ---- program life cycle -------------------------------------------------- */

/* Call first: line-buffered output, seed chosen and printed, clean environment. */
static inline void check_start(const char *name)
{
	const char *s = getenv("CHECK_SEED");
	const char *exit_at_failure = getenv("CHECK_EXIT_AT_FAILURE");

	setvbuf(stdout, NULL, _IOLBF, 0);
	check_exit_at_failure = exit_at_failure && strcmp(exit_at_failure, "1") == 0;
	check_seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL);
	check_rng = check_seed | 1;
	printf("%s: seed %llu (rerun with CHECK_SEED=%llu)\n", name,
	       (unsigned long long)check_seed, (unsigned long long)check_seed);
	check_clear_ioalloc_env();
}

/* Prints the closing line; main's exit status. */
static inline int check_done(void)
{
	long failed = atomic_load(&check_failures);

	printf("%ld passed, %ld failed\n", atomic_load(&check_passes), failed);
	fflush(stdout);
	return failed ? 1 : 0;
}

/* Nothing could run: says why, prints the closing line, returns CHECK_SKIP
 * (or 1 if a check already failed). */
__attribute__((format(printf, 1, 2))) static inline int check_skip(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	printf("SKIP: ");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	return check_done() ? 1 : CHECK_SKIP;
}

/* ---- stderr capture ------------------------------------------------------- */

struct check_capture {
	int saved_fd;
	FILE *file;
	char text[16384];
};

/* Sends fd 2 to a temporary file until capture_end(). */
static inline void capture_begin(struct check_capture *c)
{
	fflush(stderr);
	c->text[0] = '\0';
	c->file = tmpfile();
	c->saved_fd = dup(STDERR_FILENO);
	if (!c->file || c->saved_fd < 0 || dup2(fileno(c->file), STDERR_FILENO) < 0) {
		perror("capture_begin");
		exit(2);
	}
}

/* Restores fd 2, echoes what was written to it there and returns the text. */
static inline const char *capture_end(struct check_capture *c)
{
	size_t n;

	fflush(stderr);
	dup2(c->saved_fd, STDERR_FILENO);
	close(c->saved_fd);
	rewind(c->file);
	n = fread(c->text, 1, sizeof(c->text) - 1, c->file);
	c->text[n] = '\0';
	fclose(c->file);
	fputs(c->text, stderr);
	return c->text;
}

/* How many of the @n pages that hold @p[0..n) are resident (mincore; a
 * page no longer mapped counts as not). */
static inline unsigned check_resident_pages(void *const *p, unsigned n)
{
	unsigned r = 0;

	for (unsigned i = 0; i < n; i++) {
		unsigned char v;

		if (mincore((void *)((uintptr_t)p[i] & ~(uintptr_t)4095), 4096, &v) == 0)
			r += v & 1;
	}
	return r;
}

/* A template for mkdtemp or mkstemp under $TMPDIR (else /tmp): the mutation
 * script gives each run a TMPDIR it removes after, so a test that a mutation
 * crashed leaves nothing behind. */
static inline void check_tmp_template(char *out, size_t len, const char *name)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(out, len, "%s/%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", name);
}

/* How often @what occurs in @text. */
static inline unsigned count_text(const char *text, const char *what)
{
	unsigned n = 0;

	for (const char *at = text; (at = strstr(at, what)); at++)
		n++;
	return n;
}

/* Number of lines in @text (a last line without '\n' counts). */
static inline int count_lines(const char *text)
{
	int n = 0;

	for (const char *p = text; *p; p++)
		if (*p == '\n' || p[1] == '\0')
			n++;
	return n;
}

/* Runs @call with stderr captured: it must print exactly one line, which
 * contains @needle. */
#define ONE_MESSAGE(needle, call)                                                  \
	do {                                                                       \
		struct check_capture cap_;                                         \
		capture_begin(&cap_);                                              \
		call;                                                              \
		capture_end(&cap_);                                                \
		if (!CHECK_EQ(count_lines(cap_.text), 1))                          \
			printf("  after %s\n", #call);                             \
		CHECK_CONTAINS(cap_.text, needle);                                 \
	} while (0)

/* Runs @call with stderr captured: it must print nothing. */
#define NO_MESSAGE(call)                                                           \
	do {                                                                       \
		struct check_capture cap_;                                         \
		capture_begin(&cap_);                                              \
		call;                                                              \
		capture_end(&cap_);                                                \
		if (!CHECK_EQ(count_lines(cap_.text), 0))                          \
			printf("  after %s\n", #call);                             \
	} while (0)

#endif
