/* What dump.c offers api.c. */
#ifndef IOA_DUMP_H
#define IOA_DUMP_H

/* ioa_dump(@fd, 0) from inside ioa_fini, whose state is no longer up but
 * whose structures are all there until it returns them. */
void ioa__dump_in_fini(int fd);

#endif
