/*
 * The NVMe register, queue-entry and command layouts this driver uses,
 * written from the NVM Express Base Specification (1.4): the controller's
 * registers in BAR0, the 64-byte submission queue entry, the 16-byte
 * completion queue entry, and the admin and NVM command opcodes.
 */
#ifndef IOA_NVME_REGS_H
#define IOA_NVME_REGS_H

#include <stdint.h>

/* ---- controller registers (BAR0) ---------------------------------------- */
#define NVME_REG_CAP 0x00  /* 64-bit: capabilities */
#define NVME_REG_VS 0x08   /* version */
#define NVME_REG_INTMS 0x0c /* interrupt mask set */
#define NVME_REG_CC 0x14   /* controller configuration */
#define NVME_REG_CSTS 0x1c /* controller status */
#define NVME_REG_AQA 0x24  /* admin queue attributes */
#define NVME_REG_ASQ 0x28  /* 64-bit: admin submission queue base */
#define NVME_REG_ACQ 0x30  /* 64-bit: admin completion queue base */
#define NVME_REG_DOORBELLS 0x1000

#define NVME_CAP_MQES(cap) ((uint32_t)((cap) & 0xffff) + 1) /* entries per queue, at most */
#define NVME_CAP_TO_MS(cap) ((uint32_t)(((cap) >> 24) & 0xff) * 500)
#define NVME_CAP_DSTRD(cap) ((uint32_t)(((cap) >> 32) & 0xf))
#define NVME_CAP_CSS_NVM(cap) (((cap) >> 37) & 1)
#define NVME_CAP_MPSMIN(cap) ((uint32_t)(((cap) >> 48) & 0xf)) /* 2^(12 + n) bytes */

#define NVME_CC_EN (1u << 0)
#define NVME_CC_CSS_NVM (0u << 4)
#define NVME_CC_MPS_4K (0u << 7)
#define NVME_CC_AMS_RR (0u << 11)
#define NVME_CC_IOSQES (6u << 16) /* 2^6 = 64-byte SQ entries */
#define NVME_CC_IOCQES (4u << 20) /* 2^4 = 16-byte CQ entries */

#define NVME_CSTS_RDY (1u << 0)
#define NVME_CSTS_CFS (1u << 1) /* controller fatal status */

/* Doorbell of queue @qid, SQ tail or CQ head, with stride 4 << dstrd bytes. */
#define NVME_SQ_DOORBELL(qid, dstrd) (NVME_REG_DOORBELLS + (2u * (qid)) * (4u << (dstrd)))
#define NVME_CQ_DOORBELL(qid, dstrd) (NVME_REG_DOORBELLS + (2u * (qid) + 1) * (4u << (dstrd)))

/* The memory page size this driver sets (CC.MPS = 0): PRP entries are of it. */
#define NVME_PAGE 4096u

/* ---- queue entries -------------------------------------------------------- */
struct nvme_sqe {
	uint8_t opcode;
	uint8_t flags;  /* FUSE 1:0, PSDT 7:6: 0 = PRPs */
	uint16_t cid;   /* command identifier, echoed in the completion */
	uint32_t nsid;
	uint32_t cdw2, cdw3;
	uint64_t mptr;
	uint64_t prp1, prp2;
	uint32_t cdw10, cdw11, cdw12, cdw13, cdw14, cdw15;
};

struct nvme_cqe {
	uint32_t result; /* command specific (DW0) */
	uint32_t rsvd;
	uint16_t sq_head; /* how far the controller has consumed the SQ */
	uint16_t sq_id;
	uint16_t cid;
	uint16_t status; /* bit 0: phase tag; 15:1: status field (SC 8:1, SCT 11:9) */
};

_Static_assert(sizeof(struct nvme_sqe) == 64, "an SQ entry is 64 bytes");
_Static_assert(sizeof(struct nvme_cqe) == 16, "a CQ entry is 16 bytes");

#define NVME_CQE_PHASE(status) ((status) & 1u)
#define NVME_CQE_SC(status) (((status) >> 1) & 0xffu)  /* status code */
#define NVME_CQE_SCT(status) (((status) >> 9) & 0x7u)  /* status code type */
#define NVME_SC_DATA_TRANSFER_ERROR 0x04               /* generic status (SCT 0) */

/* ---- opcodes ---------------------------------------------------------------- */
enum nvme_admin_opcode {
	NVME_ADMIN_DELETE_SQ = 0x00,
	NVME_ADMIN_CREATE_SQ = 0x01,
	NVME_ADMIN_DELETE_CQ = 0x04,
	NVME_ADMIN_CREATE_CQ = 0x05,
	NVME_ADMIN_IDENTIFY = 0x06,
	NVME_ADMIN_SET_FEATURES = 0x09,
};

enum nvme_io_opcode {
	NVME_IO_WRITE = 0x01,
	NVME_IO_READ = 0x02,
};

#define NVME_IDENTIFY_NAMESPACE 0x00 /* CNS */
#define NVME_IDENTIFY_CONTROLLER 0x01
#define NVME_FEAT_NUM_QUEUES 0x07
#define NVME_QUEUE_PHYS_CONTIG 1u /* CDW11 bit 0 of Create I/O SQ/CQ */

/* Identify controller (4 KiB): the fields read here, by byte offset. */
#define NVME_ID_CTRL_SN 4    /* 20 bytes, ASCII */
#define NVME_ID_CTRL_MN 24   /* 40 bytes, ASCII */
#define NVME_ID_CTRL_MDTS 77 /* max transfer: 2^n min pages; 0 = no limit */
#define NVME_ID_CTRL_NN 516  /* 32-bit: number of namespaces */

/* Identify namespace (4 KiB). */
#define NVME_ID_NS_NSZE 0    /* 64-bit: size in blocks */
#define NVME_ID_NS_FLBAS 26  /* bits 3:0: the LBA format in use */
#define NVME_ID_NS_LBAF 128  /* 4 bytes each: LBADS in bits 23:16 (2^n bytes) */

#endif
