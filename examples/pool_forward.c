/*
 * A DPDK-style forwarding loop over an ioalloc pool, on the sim backend.
 * An "rx" thread takes bursts of 32 packet buffers from the pool, has the
 * simulated device DMA a frame into each (ioa_sim_dma at the buffer's
 * IOVA, ioa_pool_obj_iova), and hands the burst to a "tx" thread through a
 * ring; "tx" has the device read each frame back (transmit), checks its
 * header and returns the burst to the pool. The buffers stay mapped while
 * they recycle. Prints packets per second, the pool's and ioalloc's
 * statistics. Usage: pool_forward [seconds] (default 1). Exit status 0
 * when every frame arrived intact and every buffer went back.
 */
#include <ioalloc.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BURST 32
#define NBUF 2048
#define BUF_SIZE 2048 /* a packet buffer */
#define FRAME 64      /* bytes the device writes per packet */

static struct ioa_pool *pool;
static struct ioa_ring *txq;
static atomic_int stop;
static atomic_ulong rx_pkts, tx_pkts, bad_frames, no_buf;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *rx(void *arg)
{
	uint8_t frame[FRAME];
	void *burst[BURST];
	uint64_t seq = 0;

	(void)arg;
	memset(frame, 0xee, sizeof(frame));
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		if (ioa_pool_get_bulk(pool, burst, BURST) != 0) {
			atomic_fetch_add_explicit(&no_buf, 1, memory_order_relaxed);
			sched_yield(); /* tx holds them all: let it return some */
			continue;
		}
		for (unsigned k = 0; k < BURST; k++) {
			memcpy(frame, &seq, sizeof(seq)); /* the "header": a sequence number */
			seq++;
			if (ioa_sim_dma(ioa_pool_obj_iova(burst[k]), frame, FRAME,
					IOA_DMA_FROM_DEVICE) != 0)
				atomic_fetch_add_explicit(&bad_frames, 1, memory_order_relaxed);
		}
		atomic_fetch_add_explicit(&rx_pkts, BURST, memory_order_relaxed);
		while (ioa_ring_enqueue_bulk(txq, burst, BURST, NULL) != BURST)
			sched_yield(); /* tx queue full */
	}
	return NULL;
}

static void *tx(void *arg)
{
	uint8_t frame[FRAME];
	void *burst[BURST];
	uint64_t expect = 0;

	(void)arg;
	for (;;) {
		int n = ioa_ring_dequeue_burst(txq, burst, BURST, NULL);

		if (n <= 0) {
			if (atomic_load_explicit(&stop, memory_order_acquire) == 2)
				break; /* rx has stopped and the queue is drained */
			sched_yield();
			continue;
		}
		for (int k = 0; k < n; k++) {
			uint64_t seq;

			if (ioa_sim_dma(ioa_pool_obj_iova(burst[k]), frame, FRAME,
					IOA_DMA_TO_DEVICE) != 0 ||
			    (memcpy(&seq, frame, sizeof(seq)), seq != expect) ||
			    memcmp(burst[k], frame, FRAME) != 0)
				atomic_fetch_add_explicit(&bad_frames, 1, memory_order_relaxed);
			expect++;
		}
		ioa_pool_put_bulk(pool, burst, (unsigned)n);
		atomic_fetch_add_explicit(&tx_pkts, (unsigned long)n, memory_order_relaxed);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 1.0, t0, t1;
	struct ioa_config cfg;
	struct ioa_pool_stats ps;
	pthread_t rx_t, tx_t;
	int err;

	ioa_config_init(&cfg);
	if (ioa_config_from_env(&cfg) != 0)
		return 2;
	cfg.backend = IOA_BACKEND_SIM;
	if ((err = ioa_init(&cfg)) != 0) {
		fprintf(stderr, "pool_forward: ioa_init failed: %s\n", strerror(-err));
		return 2;
	}
	pool = ioa_pool_create("pkt", BUF_SIZE, NBUF, 256, IOA_NODE_ANY, 0);
	txq = ioa_ring_create("txq", 1024, IOA_NODE_ANY, IOA_RING_SP_ENQ | IOA_RING_SC_DEQ);
	if (!pool || !txq) {
		fprintf(stderr, "pool_forward: no pool or ring: %s\n", strerror(errno));
		return 2;
	}
	t0 = now();
	pthread_create(&rx_t, NULL, rx, NULL);
	pthread_create(&tx_t, NULL, tx, NULL);
	usleep((useconds_t)(seconds * 1e6));
	atomic_store(&stop, 1);
	pthread_join(rx_t, NULL);
	/* release: tx sees every burst rx enqueued before it looks for 2. */
	atomic_store_explicit(&stop, 2, memory_order_release);
	pthread_join(tx_t, NULL);
	t1 = now();

	ioa_pool_stats_get(pool, &ps);
	printf("pool_forward: %lu packets received, %lu sent in %.2f s: %.2f Mpps "
	       "(bursts of %d, %d buffers of %d bytes, cache 256)\n",
	       atomic_load(&rx_pkts), atomic_load(&tx_pkts), t1 - t0,
	       (double)atomic_load(&tx_pkts) / (t1 - t0) / 1e6, BURST, NBUF, BUF_SIZE);
	printf("pool \"pkt\": hits %llu, misses %llu, flushes %llu, failed gets %llu; in use %u, "
	       "in ring %u, in caches %u\n",
	       (unsigned long long)ps.hits, (unsigned long long)ps.misses,
	       (unsigned long long)ps.flushes, (unsigned long long)ps.failed, ps.in_use,
	       ps.in_ring, ps.in_caches);
	fflush(stdout);
	ioa_stats_print(STDOUT_FILENO);
	err = atomic_load(&bad_frames) != 0 || ps.in_use != 0 ||
	      atomic_load(&rx_pkts) != atomic_load(&tx_pkts) || atomic_load(&tx_pkts) == 0;
	if (err)
		fprintf(stderr, "pool_forward: FAILED: %lu bad frames, %u buffers in use\n",
			atomic_load(&bad_frames), ps.in_use);
	ioa_ring_free(txq);
	ioa_pool_free(pool);
	ioa_fini();
	return err;
}
