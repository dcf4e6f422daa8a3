/* Configuration: the IOALLOC_* variables, parsed without allocating. */
#ifndef IOA_CONFIG_H
#define IOA_CONFIG_H

#include "ioalloc.h"

#include <stddef.h>

/* ioa_config_from_env for the preload library, whose program asked for no
 * library: a value not accepted is said (one message each, at each read)
 * and its setting keeps @cfg's value, so that a mistyped variable does not
 * fail every malloc (review helper-113: IOALLOC_PROTECT=$MODE with MODE
 * unset). 0. The start does the same for a node or CPUs not here (api.c). */
int ioa__config_from_env_skipping(struct ioa_config *cfg);
/* The end of the message for a value skipped so. */
#define IOA_CONFIG_SKIPPED "; ignored, the default stays"

/* Checks the settings that do not depend on the machine; 0 or -EINVAL. */
int ioa__config_validate(const struct ioa_config *cfg);

const char *ioa__backend_name(enum ioa_backend backend);
const char *ioa__page_size_name(enum ioa_page_size page_size);

/* Parses a PCI address, DDDD:BB:DD.F or BB:DD.F in hex, and writes it to
 * @out as sysfs names it (0000:00:03.0); 0, or -1 if malformed or longer
 * than @len. Allocates nothing. */
int ioa__pci_address_parse(const char *s, char *out, size_t len);

#endif
