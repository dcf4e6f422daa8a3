/* A plugin with 1 KiB of initial-exec thread-local storage, as some
 * dlopen()ed libraries have (a GL driver, another allocator): test_dlopen_late
 * loads it before libioalloc.so, which must still find room in glibc's
 * static TLS surplus. */
__thread char tls_neighbour_block[1024] __attribute__((tls_model("initial-exec")));

char *tls_neighbour(void)
{
	return tls_neighbour_block;
}
