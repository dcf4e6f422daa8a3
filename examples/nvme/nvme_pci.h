/*
 * The PCI side of the controller through VFIO: the device fd from its group,
 * the class code checked (NVMe: 01/08/02), memory decoding and bus mastering
 * on, BAR0 mapped, the NUMA node read from sysfs.
 */
#ifndef IOA_NVME_PCI_H
#define IOA_NVME_PCI_H

#include "nvme_ctrl.h"

/* Sets c->device, c->bar0, c->bar0_len and c->node. 0, or -errno after one
 * message; on failure what was opened is closed again. */
int nvme_pci_open(struct nvme_ctrl *c, int group_fd, const char *addr);

/* Unmaps BAR0 and closes the device fd (each if open). */
void nvme_pci_close(struct nvme_ctrl *c);

#endif
