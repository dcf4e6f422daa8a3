/*
 * QEMU's edu PCI device (1234:11e8) driven from userspace through VFIO: what
 * a driver needs to make it DMA. Shared by examples/edu_driver.c and the VM
 * tests (tests/vm/).
 *
 * The device (QEMU hw/misc/edu.c) has its DMA registers in BAR0: 0x80
 * source, 0x88 destination, 0x90 count, 0x98 command (bit 0: start, and busy
 * until done; bit 1: from the device's buffer to RAM, else from RAM to the
 * buffer). Its buffer is 4 KiB at device address 0x40000. A transfer ends
 * about 100 ms (guest time) after it starts. Addresses in RAM are IOVAs: the
 * device reaches memory only through the IOMMU. An access the IOMMU refuses
 * moves nothing and the device reports nothing: the guest kernel logs a
 * DMAR fault.
 */
#ifndef IOA_EXAMPLES_EDU_H
#define IOA_EXAMPLES_EDU_H

#include <stddef.h>
#include <stdint.h>

#define EDU_BUF_SIZE 4096u

struct edu {
	int device;             /* VFIO device fd */
	volatile uint8_t *bar0; /* the registers, mmap'd */
	size_t bar0_len;
};

/*
 * Opens the edu device at PCI address @addr (0000:81:00.0) in the VFIO group
 * @group_fd (which must be in a container with an IOMMU set: ioa_init with
 * the vfio backend does that; ioa_vfio_group_fd() gives the fd), maps BAR0
 * and turns on bus mastering. 0, or -errno after a message on stderr.
 */
int edu_open(struct edu *e, int group_fd, const char *addr);
/*
 * The same for a VFIO device fd the caller already has, bound to an IOMMU
 * (the iommufd backend's ioa_iommufd_device_fd()): edu works on its own copy
 * of it (dup), which edu_close closes; @device_fd stays the caller's.
 */
int edu_open_device(struct edu *e, int device_fd);
void edu_close(struct edu *e);

/*
 * Copies @len bytes from memory at @iova into the device's buffer at @off
 * (the device reads RAM), or from the buffer at @off to memory at @iova (the
 * device writes RAM), and waits for the transfer to end. @off + @len must
 * stay below EDU_BUF_SIZE: QEMU 7.2 aborts the machine on a transfer that
 * reaches the buffer's last byte. 0, -EINVAL, or -ETIMEDOUT after 10 s.
 */
int edu_read_ram(struct edu *e, uint64_t iova, uint32_t off, uint32_t len);
int edu_write_ram(struct edu *e, uint32_t off, uint64_t iova, uint32_t len);

#endif
