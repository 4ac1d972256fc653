// Virtio constants, named as the virtio 1.2 specification names them (Linux uapi names where the
// spec leaves a constant unnamed). Feature bits are bit numbers; use featureBit() for the mask.

// ---- device status (§2.1) ---------------------------------------------------------------------
export const VIRTIO_STATUS_ACKNOWLEDGE = 1;
export const VIRTIO_STATUS_DRIVER = 2;
export const VIRTIO_STATUS_DRIVER_OK = 4;
export const VIRTIO_STATUS_FEATURES_OK = 8;
export const VIRTIO_STATUS_DEVICE_NEEDS_RESET = 64;
export const VIRTIO_STATUS_FAILED = 128;

// ---- reserved feature bits (§6) ---------------------------------------------------------------
export const VIRTIO_F_INDIRECT_DESC = 28;
export const VIRTIO_F_EVENT_IDX = 29;
/** Linux's name for VIRTIO_F_INDIRECT_DESC. */
export const VIRTIO_RING_F_INDIRECT_DESC = VIRTIO_F_INDIRECT_DESC;
/** Linux's name for VIRTIO_F_EVENT_IDX. */
export const VIRTIO_RING_F_EVENT_IDX = VIRTIO_F_EVENT_IDX;
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_ACCESS_PLATFORM = 33;
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_F_IN_ORDER = 35;
export const VIRTIO_F_ORDER_PLATFORM = 36;
export const VIRTIO_F_SR_IOV = 37;
export const VIRTIO_F_NOTIFICATION_DATA = 38;
export const VIRTIO_F_NOTIF_CONFIG_DATA = 39;
export const VIRTIO_F_RING_RESET = 40;

/** Mask of one feature bit. */
export function featureBit(bit: number): bigint {
  return 1n << BigInt(bit);
}

// ---- device ids (§5) --------------------------------------------------------------------------
export const VIRTIO_ID_NET = 1;
export const VIRTIO_ID_BLOCK = 2;
export const VIRTIO_ID_CONSOLE = 3;
export const VIRTIO_ID_RNG = 4;
export const VIRTIO_ID_BALLOON = 5;
export const VIRTIO_ID_SCSI = 8;
export const VIRTIO_ID_9P = 9;
export const VIRTIO_ID_GPU = 16;
export const VIRTIO_ID_INPUT = 18;
export const VIRTIO_ID_VSOCK = 19;
export const VIRTIO_ID_CRYPTO = 20;
export const VIRTIO_ID_IOMMU = 23;
export const VIRTIO_ID_MEM = 24;
export const VIRTIO_ID_SOUND = 25;
export const VIRTIO_ID_FS = 26;
export const VIRTIO_ID_PMEM = 27;

// ---- split virtqueue (§2.7) -------------------------------------------------------------------
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const VIRTQ_USED_F_NO_NOTIFY = 1;
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** Largest split-virtqueue size (a power of two). */
export const VIRTQ_MAX_SIZE = 32768;
/** Size of struct virtq_desc. */
export const VIRTQ_DESC_SIZE = 16;
/** Size of struct virtq_used_elem. */
export const VIRTQ_USED_ELEM_SIZE = 8;
/** Required alignments (§2.7 table): descriptor table, driver (available) ring, device (used) ring. */
export const VIRTQ_DESC_ALIGN = 16;
export const VIRTQ_AVAIL_ALIGN = 2;
export const VIRTQ_USED_ALIGN = 4;

// ---- virtio-mmio (§4.2.2), version 2 register layout ------------------------------------------
export const VIRTIO_MMIO_MAGIC = 0x74726976; // "virt"
export const VIRTIO_MMIO_VERSION_2 = 2;
/** kindling's VendorID: "KDLG" as a little-endian u32 (QEMU uses "QEMU" = 0x554d4551 the same way). */
export const VIRTIO_MMIO_VENDOR_ID_KINDLING = 0x474c444b;

export const VIRTIO_MMIO_MAGIC_VALUE = 0x000;
export const VIRTIO_MMIO_VERSION = 0x004;
export const VIRTIO_MMIO_DEVICE_ID = 0x008;
export const VIRTIO_MMIO_VENDOR_ID = 0x00c;
export const VIRTIO_MMIO_DEVICE_FEATURES = 0x010;
export const VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014;
export const VIRTIO_MMIO_DRIVER_FEATURES = 0x020;
export const VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024;
/** Legacy (version 1) only; reads 0 and ignores writes here. */
export const VIRTIO_MMIO_GUEST_PAGE_SIZE = 0x028;
export const VIRTIO_MMIO_QUEUE_SEL = 0x030;
export const VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034;
export const VIRTIO_MMIO_QUEUE_NUM = 0x038;
/** Legacy only. */
export const VIRTIO_MMIO_QUEUE_ALIGN = 0x03c;
/** Legacy only. */
export const VIRTIO_MMIO_QUEUE_PFN = 0x040;
export const VIRTIO_MMIO_QUEUE_READY = 0x044;
export const VIRTIO_MMIO_QUEUE_NOTIFY = 0x050;
export const VIRTIO_MMIO_INTERRUPT_STATUS = 0x060;
export const VIRTIO_MMIO_INTERRUPT_ACK = 0x064;
export const VIRTIO_MMIO_STATUS = 0x070;
export const VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080;
export const VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084;
export const VIRTIO_MMIO_QUEUE_DRIVER_LOW = 0x090;
export const VIRTIO_MMIO_QUEUE_DRIVER_HIGH = 0x094;
export const VIRTIO_MMIO_QUEUE_DEVICE_LOW = 0x0a0;
export const VIRTIO_MMIO_QUEUE_DEVICE_HIGH = 0x0a4;
export const VIRTIO_MMIO_SHM_SEL = 0x0ac;
export const VIRTIO_MMIO_SHM_LEN_LOW = 0x0b0;
export const VIRTIO_MMIO_SHM_LEN_HIGH = 0x0b4;
export const VIRTIO_MMIO_SHM_BASE_LOW = 0x0b8;
export const VIRTIO_MMIO_SHM_BASE_HIGH = 0x0bc;
/** Needs VIRTIO_F_RING_RESET, which this transport does not offer: reads 0, writes ignored. */
export const VIRTIO_MMIO_QUEUE_RESET = 0x0c0;
export const VIRTIO_MMIO_CONFIG_GENERATION = 0x0fc;
/** Device-specific configuration space starts here. */
export const VIRTIO_MMIO_CONFIG = 0x100;
/** Size of one virtio-mmio window (matches VIRTIO_MMIO_SIZE in arch layout). */
export const VIRTIO_MMIO_WINDOW_SIZE = 0x1000;
/** Largest device configuration space that fits the window. */
export const VIRTIO_MMIO_CONFIG_MAX = VIRTIO_MMIO_WINDOW_SIZE - VIRTIO_MMIO_CONFIG;

/** InterruptStatus bits. */
export const VIRTIO_MMIO_INT_VRING = 1;
export const VIRTIO_MMIO_INT_CONFIG = 2;
