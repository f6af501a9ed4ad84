//! How an accelerator is set up.

use kvm_msix::Policy;
use msix_model::BarOffset;

/// Default of [`AccelConfig::policy`]: `auto`, since which of the exact
/// mechanisms (`fast`, `strict`) costs less depends on the host
/// (docs/performance.md); it measures at placement and runs that one.
pub const DEFAULT_POLICY: Policy = Policy::Auto;

/// Default of [`AccelConfig::unmask_batch`].
pub const DEFAULT_UNMASK_BATCH: u16 = 64;

/// Default of [`AccelConfig::unmask_coalescing`].
pub const DEFAULT_UNMASK_COALESCING: std::time::Duration = std::time::Duration::from_millis(10);

/// Default of [`AccelConfig::unmask_polling`]: the longest a service
/// thread polls for the next absorbed unmask after mask traffic (see
/// [`crate::ServiceThread`]).
pub const DEFAULT_UNMASK_POLLING: std::time::Duration = std::time::Duration::ZERO;

/// Default of [`AccelConfig::unmask_deferral`]: off.
pub const DEFAULT_UNMASK_DEFERRAL: std::time::Duration = std::time::Duration::ZERO;

/// Default number of entries whose unmask is absorbed by an ioeventfd.
///
/// Each absorbed entry costs two fds (its unmask eventfd and the ioeventfd
/// registration's reference), about 5 us to register and, because KVM waits
/// for an SRCU grace period per unregistration, milliseconds to unregister on
/// a BAR move or teardown (8 ms each measured here). 256 covers every queue
/// of a large NIC while bounding that cost; entries past it behave exactly,
/// as under `strict` (their unmask exits).
pub const DEFAULT_FAST_ENTRIES: u16 = 256;

/// One device's MSI-X setup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccelConfig {
    /// MSI-X Table Size (entries), 1..=2048.
    pub table_size: u16,
    /// Table Offset/BIR the guest sees in the capability.
    pub table: BarOffset,
    /// PBA Offset/BIR the guest sees in the capability.
    pub pba: BarOffset,
    /// Fast-path policy.
    pub policy: Policy,
    /// Memslot number set aside for the table's read-only shadow.
    pub memslot: u32,
    /// Entries with an unmask ioeventfd under `fast`.
    pub fast_entries: u16,
    /// Mask at the source when the source can (irqfds then stay attached).
    pub source_masking: bool,
    /// The table's pages also hold other device registers: the table cannot
    /// be mapped read-only and the policy falls back to `trap`.
    pub table_pages_shared: bool,
    /// Size of the table's BAR, when known: a BAR smaller than a page
    /// cannot have the table's page mapped (the page would cover addresses
    /// outside the BAR), so only the table's bytes are decoded, under `trap`.
    pub table_bar_size: Option<u64>,
    /// The capability's Next Pointer byte (config-space offset of the next
    /// capability, 0 for none).
    pub next_pointer: u8,
    /// The VMM's name for this device in events ([`crate::AccelEvent::device`]).
    pub device_id: u32,
    /// Under `fast`, absorbed unmasks that need a route commit wait to share
    /// one: at most this many wait before an exit applies them all.
    pub unmask_batch: u16,
    /// Under `fast`, how long an absorbed unmask that needs a route commit
    /// may wait for others to share it (the servicer applies it then);
    /// zero applies every unmask as soon as the servicer sees it. An unmask
    /// whose route the hypervisor already holds never waits.
    pub unmask_coalescing: std::time::Duration,
    /// Under `fast`, the longest a [`crate::ServiceThread`] keeps polling
    /// for the next absorbed unmask after applying one that followed a mask
    /// exit, instead of sleeping until the unmask wakes it; the window
    /// tunes itself between 0 and this (as KVM's halt polling does) and is
    /// 0 without mask traffic. Zero: never poll.
    pub unmask_polling: std::time::Duration,
    /// Under `fast`, with a [`crate::FastPathSubscriber`] (or
    /// [`crate::ServiceThread`]) as servicer: an absorbed unmask that wakes
    /// it less than this after the guest's last mask exit is shown unmasked
    /// to the guest's read-back at once, but left to the guest's next exit,
    /// the servicer no longer woken by unmasks until no mask exit came for
    /// this long (or [`crate::UNMASK_DEFERRAL_MAX_WINDOWS`] times this
    /// passed); it then applies what is left. An unmask with a message held
    /// behind it, or one that needs a route commit, is not deferred. Bounds
    /// how late an unmask no exit follows is applied. Zero: never defer;
    /// above 2^32 s, taken as that.
    pub unmask_deferral: std::time::Duration,
    /// The device ID every MSI route carries, for hypervisors whose
    /// interrupt translation needs it (aarch64 GICv3 ITS:
    /// `KVM_MSI_VALID_DEVID`); `None` on x86.
    pub msi_devid: Option<u32>,
    /// Under `auto`, the least time between two measurements of this host
    /// (placements in between keep the last choice): in `t` a device
    /// measures at most `1 + t / auto_recheck` times.
    pub auto_recheck: std::time::Duration,
    /// Under `auto`, the choice to make whatever the measurement finds
    /// (`fast`; any other policy means `strict`): the measurement still
    /// runs, is counted and reported, only its verdict is replaced. For
    /// tests and for hosts whose operator knows better; None: measure.
    pub auto_pinned: Option<Policy>,
}

impl AccelConfig {
    /// A table of `table_size` entries at BAR `bir` offset 0 and its PBA on
    /// the next page boundary after it, policy `auto` (the host's cheaper
    /// exact mechanism, measured at placement), source masking on.
    pub fn new(table_size: u16, bir: u8, memslot: u32) -> Self {
        let table_len = u64::from(table_size) * 16;
        let pba_offset = kvm_msix::page_align_up(table_len.max(1)) as u32;
        AccelConfig {
            table_size,
            table: BarOffset::new(bir, 0),
            pba: BarOffset::new(bir, pba_offset),
            policy: DEFAULT_POLICY,
            memslot,
            fast_entries: DEFAULT_FAST_ENTRIES,
            source_masking: true,
            table_pages_shared: false,
            table_bar_size: None,
            next_pointer: 0,
            device_id: 0,
            msi_devid: None,
            unmask_batch: DEFAULT_UNMASK_BATCH,
            unmask_coalescing: DEFAULT_UNMASK_COALESCING,
            unmask_polling: DEFAULT_UNMASK_POLLING,
            unmask_deferral: DEFAULT_UNMASK_DEFERRAL,
            auto_recheck: crate::DEFAULT_AUTO_RECHECK,
            auto_pinned: None,
        }
    }

    /// The same setup with absorbed unmasks left to the guest's next exit
    /// for up to `window` after its last mask exit (see
    /// [`AccelConfig::unmask_deferral`]).
    pub fn with_unmask_deferral(mut self, window: std::time::Duration) -> Self {
        self.unmask_deferral = window;
        self
    }

    /// The same setup with a service thread polling at most `max` for the
    /// next absorbed unmask (see [`AccelConfig::unmask_polling`]).
    pub fn with_unmask_polling(mut self, max: std::time::Duration) -> Self {
        self.unmask_polling = max;
        self
    }

    /// The same setup with absorbed unmasks that need a commit waiting at
    /// most `window` for others, in batches of at most `batch`.
    pub fn with_unmask_coalescing(mut self, window: std::time::Duration, batch: u16) -> Self {
        self.unmask_coalescing = window;
        self.unmask_batch = batch.max(1);
        self
    }

    /// The same setup named `id` in events.
    pub fn with_device_id(mut self, id: u32) -> Self {
        self.device_id = id;
        self
    }

    /// The same setup with every MSI route carrying device ID `devid`.
    pub fn with_msi_devid(mut self, devid: Option<u32>) -> Self {
        self.msi_devid = devid;
        self
    }

    /// The same setup under `auto` measuring at most once per `recheck`
    /// (see [`AccelConfig::auto_recheck`]).
    pub fn with_auto_recheck(mut self, recheck: std::time::Duration) -> Self {
        self.auto_recheck = recheck;
        self
    }

    /// The same setup with `auto`'s verdict pinned to `choice` (see
    /// [`AccelConfig::auto_pinned`]).
    pub fn with_auto_pinned(mut self, choice: Option<Policy>) -> Self {
        self.auto_pinned = choice;
        self
    }

    /// The same setup under `policy`.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The same setup with source masking on or off.
    pub fn with_source_masking(mut self, on: bool) -> Self {
        self.source_masking = on;
        self
    }

    /// The same setup with `entries` unmask ioeventfds under `fast`.
    pub fn with_fast_entries(mut self, entries: u16) -> Self {
        self.fast_entries = entries;
        self
    }

    /// The same setup with the table at `table` and the PBA at `pba` (BAR
    /// index and offset of each, as the capability states them).
    pub fn with_layout(mut self, table: BarOffset, pba: BarOffset) -> Self {
        self.table = table;
        self.pba = pba;
        self
    }

    /// The same setup with the table's BAR `size` bytes long.
    pub fn with_table_bar_size(mut self, size: u64) -> Self {
        self.table_bar_size = Some(size);
        self
    }

    /// The same setup with the table's pages holding other registers (or
    /// not): see [`AccelConfig::table_pages_shared`].
    pub fn with_table_pages_shared(mut self, shared: bool) -> Self {
        self.table_pages_shared = shared;
        self
    }

    /// The same setup with the capability's Next Pointer set.
    pub fn with_next_pointer(mut self, next: u8) -> Self {
        self.next_pointer = next;
        self
    }

    /// Bytes from the BAR's start to the end of the table or PBA, whichever
    /// ends last, page aligned.
    pub fn msix_span(&self) -> u64 {
        let table_end = u64::from(self.table.offset) + self.table_len();
        let pba_end = u64::from(self.pba.offset) + self.pba_len();
        kvm_msix::page_align_up(table_end.max(pba_end))
    }

    /// Bytes of the table: 16 per entry.
    pub fn table_len(&self) -> u64 {
        u64::from(self.table_size) * 16
    }

    /// Bytes of the PBA: one bit per entry, in whole qwords.
    pub fn pba_len(&self) -> u64 {
        u64::from(self.table_size).div_ceil(64) * 8
    }

    /// The smallest valid BAR size (a power of two) holding table and PBA.
    pub fn bar_size(&self) -> u64 {
        self.msix_span().next_power_of_two()
    }
}
