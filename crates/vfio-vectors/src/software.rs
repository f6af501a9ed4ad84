//! Software MSI-X source: a device model with one eventfd per vector, for tests, demos and benches.
//!
//! [`SoftwareSource`] behaves like the interrupt side of a PCI function with
//! MSI-X: a vector fires only while MSI-X is enabled at the source and the
//! vector is among the enabled ones; a *maskable* source additionally holds
//! a per-vector mask bit and latches a pending bit while masked (PCIe Base
//! spec, MSI-X Table and PBA), delivering it once on unmask.
//!
//! The source is `Clone`: all clones share one state, so the accelerator can
//! own one clone as `Box<dyn MsixSource>` while a test keeps another one to
//! [`fire`](SoftwareSource::fire) vectors (a bench's storm thread does the
//! same with a clone of its own).
//!
//! State rules (chosen to follow a real function):
//! - Mask bits belong to the function, not to the enable state: they survive
//!   [`enable`](MsixSource::enable), [`grow`](MsixSource::grow) and
//!   [`disable`](MsixSource::disable), and start cleared. Only
//!   [`SoftwareSource::reset_masks`] clears them. (Kernel VFIO differs: the
//!   host rewrites Vector Control on SET_IRQS; the accelerator re-applies its
//!   masks after every enable, so both behaviours work with it.)
//! - Pending bits exist only while enabled: [`disable`](MsixSource::disable)
//!   and [`enable`](MsixSource::enable) (a fresh enable, like SET_IRQS)
//!   clear them; [`grow`](MsixSource::grow) keeps them.
//! - A vector past the enabled count while MSI-X is enabled is held masked
//!   by the host (as a VFIO host masks every entry it has not wired): a fire
//!   latches its pending bit, and [`grow`](MsixSource::grow) sends what
//!   such a vector latched once it is enabled and not masked.
//! - A plain (non-maskable) source never latches an enabled vector: a fire
//!   on it always writes the trigger eventfd. When the accelerator masks
//!   such a vector by detaching its irqfd, the signals accumulate in the
//!   eventfd count, which is then the pending state.
//! - A vector's messages can be re-pointed at another eventfd
//!   ([`SoftwareSource::repoint`]), as a VMM re-points a VFIO trigger with
//!   `VFIO_DEVICE_SET_IRQS` (QEMU and crosvm do on every mask and unmask):
//!   fires then signal that eventfd instead of the vector's trigger, until
//!   the next re-point. Re-points survive enable, grow and disable, like
//!   mask bits; each is counted ([`SoftwareSource::repoints`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vmm_sys_util::eventfd::EventFd;

use crate::{Error, MsixSource, Result, SourceFeatures};

/// Largest MSI-X Table Size a function can have (Message Control bits 10:0 + 1).
pub const MAX_VECTORS: u16 = 2048;

/// What one [`SoftwareSource::fire`] did with the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FireOutcome {
    /// The trigger eventfd was written (counted as `signalled`).
    Signalled,
    /// The vector is masked at the source: its pending bit is set (`latched`).
    Latched,
    /// MSI-X is disabled or the vector is not enabled: nothing is sent
    /// (`dropped`).
    Dropped,
}

/// Per-vector counters of a [`SoftwareSource`], as read by
/// [`SoftwareSource::stats`]. `fired == signalled + latched + dropped`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VectorStats {
    /// Fires that completed (any outcome).
    pub fired: u64,
    /// Fires that wrote the trigger eventfd.
    pub signalled: u64,
    /// Fires that set the pending bit of a masked vector.
    pub latched: u64,
    /// Fires dropped because MSI-X or the vector was not enabled.
    pub dropped: u64,
}

impl VectorStats {
    fn count(&mut self, outcome: FireOutcome) {
        self.fired += 1;
        match outcome {
            FireOutcome::Signalled => self.signalled += 1,
            FireOutcome::Latched => self.latched += 1,
            FireOutcome::Dropped => self.dropped += 1,
        }
    }
}

#[derive(Debug, Default)]
struct VectorCounters {
    fired: AtomicU64,
    signalled: AtomicU64,
    latched: AtomicU64,
    dropped: AtomicU64,
}

impl VectorCounters {
    fn count(&self, outcome: FireOutcome) {
        let counter = match outcome {
            FireOutcome::Signalled => &self.signalled,
            FireOutcome::Latched => &self.latched,
            FireOutcome::Dropped => &self.dropped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.fired.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> VectorStats {
        VectorStats {
            fired: self.fired.load(Ordering::Relaxed),
            signalled: self.signalled.load(Ordering::Relaxed),
            latched: self.latched.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Enable, mask and pending state; one lock so that a fire and an unmask
/// never both miss (or both deliver) a latched message.
#[derive(Debug)]
struct VectorState {
    enabled_count: u16,
    masked: Vec<bool>,
    pending: Vec<bool>,
    /// Where each vector's messages go instead of its trigger, if re-pointed.
    redirect: Vec<Option<Arc<EventFd>>>,
}

#[derive(Debug)]
struct Shared {
    vector_count: u16,
    maskable: bool,
    /// Vectors can be added while MSI-X stays enabled; otherwise growing
    /// re-enables, which forgets the pending bits (VFIO without dynamic
    /// MSI-X allocation).
    dynamic: bool,
    triggers: Vec<EventFd>,
    counters: Vec<VectorCounters>,
    repoints: AtomicU64,
    state: Mutex<VectorState>,
}

impl Shared {
    fn check_vector(&self, vector: u16) -> Result<usize> {
        if vector < self.vector_count {
            Ok(usize::from(vector))
        } else {
            Err(Error::VectorOutOfRange {
                vector,
                count: self.vector_count,
            })
        }
    }

    fn check_count(&self, count: u16) -> Result<()> {
        if (1..=self.vector_count).contains(&count) {
            Ok(())
        } else {
            Err(Error::InvalidCount {
                count,
                max: self.vector_count,
            })
        }
    }

    fn state(&self) -> MutexGuard<'_, VectorState> {
        // The state is plain flags updated without intermediate invariants,
        // so it is consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends vector `index`'s message: a write to its trigger, or to the
    /// eventfd it is re-pointed at.
    fn signal(&self, state: &VectorState, index: usize) -> Result<()> {
        let fd = state.redirect[index]
            .as_deref()
            .unwrap_or(&self.triggers[index]);
        fd.write(1).map_err(Error::EventFd)
    }

    fn fire(&self, vector: u16) -> Result<FireOutcome> {
        let index = self.check_vector(vector)?;
        let mut state = self.state();
        let outcome = if state.enabled_count == 0 {
            FireOutcome::Dropped
        } else if vector >= state.enabled_count || state.masked[index] {
            state.pending[index] = true;
            FireOutcome::Latched
        } else {
            // Written under the lock so that an unmask (or a re-point)
            // cannot slip between the check and the write.
            self.signal(&state, index)?;
            FireOutcome::Signalled
        };
        drop(state);
        self.counters[index].count(outcome);
        Ok(outcome)
    }
}

/// A software MSI-X function: `vector_count` vectors, one non-blocking
/// trigger eventfd each, optionally maskable at the source.
///
/// Clones share the same state and eventfds.
///
/// # Example
///
/// ```
/// use vfio_vectors::software::{FireOutcome, SoftwareSource};
/// use vfio_vectors::MsixSource;
///
/// let device = SoftwareSource::maskable(4).unwrap();
/// let mut source: Box<dyn MsixSource> = Box::new(device.clone());
/// source.enable(4).unwrap();
/// source.mask(1).unwrap();
/// assert_eq!(device.fire(1).unwrap(), FireOutcome::Latched);
/// assert!(source.pending(1).unwrap());
/// source.unmask(1).unwrap(); // the latched message is signalled once
/// assert_eq!(source.trigger(1).unwrap().read().unwrap(), 1);
/// ```
#[derive(Clone, Debug)]
pub struct SoftwareSource {
    shared: Arc<Shared>,
}

impl SoftwareSource {
    /// A plain source with `vector_count` vectors (1..=2048) that cannot mask
    /// (its [`MsixSource::mask`] returns [`Error::MaskUnsupported`]).
    /// MSI-X starts disabled.
    pub fn new(vector_count: u16) -> Result<Self> {
        Self::build(vector_count, false, false)
    }

    /// A source with `vector_count` vectors (1..=2048) that masks vectors
    /// itself, latching a pending bit while masked; it reports
    /// `maskable` and `dynamic`. MSI-X starts disabled, every vector unmasked.
    pub fn maskable(vector_count: u16) -> Result<Self> {
        Self::build(vector_count, true, true)
    }

    /// A maskable source whose vector count is fixed while MSI-X is enabled,
    /// as VFIO without dynamic MSI-X allocation (`NORESIZE`): growing it
    /// disables and enables MSI-X again, which forgets every pending bit.
    pub fn maskable_fixed(vector_count: u16) -> Result<Self> {
        Self::build(vector_count, true, false)
    }

    fn build(vector_count: u16, maskable: bool, dynamic: bool) -> Result<Self> {
        if !(1..=MAX_VECTORS).contains(&vector_count) {
            return Err(Error::InvalidCount {
                count: vector_count,
                max: MAX_VECTORS,
            });
        }
        let triggers = (0..vector_count)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd))
            .collect::<Result<Vec<_>>>()?;
        let count = usize::from(vector_count);
        Ok(SoftwareSource {
            shared: Arc::new(Shared {
                vector_count,
                maskable,
                dynamic,
                triggers,
                counters: (0..count).map(|_| VectorCounters::default()).collect(),
                repoints: AtomicU64::new(0),
                state: Mutex::new(VectorState {
                    enabled_count: 0,
                    masked: vec![false; count],
                    pending: vec![false; count],
                    redirect: vec![None; count],
                }),
            }),
        })
    }

    /// Raises `vector` once and says what became of the message: dropped when
    /// MSI-X is disabled or the vector is not enabled, latched in the pending
    /// bit when the vector is masked at the source, else signalled on the
    /// trigger eventfd.
    pub fn fire(&self, vector: u16) -> Result<FireOutcome> {
        self.shared.fire(vector)
    }

    /// Raises `vector` `n` times; returns the outcomes of these fires only.
    pub fn fire_n(&self, vector: u16, n: u64) -> Result<VectorStats> {
        self.shared.check_vector(vector)?;
        let mut outcomes = VectorStats::default();
        for _ in 0..n {
            outcomes.count(self.shared.fire(vector)?);
        }
        Ok(outcomes)
    }

    /// The counters of `vector` since the source was created.
    pub fn stats(&self, vector: u16) -> Result<VectorStats> {
        let index = self.shared.check_vector(vector)?;
        Ok(self.shared.counters[index].snapshot())
    }

    /// Whether `vector` is masked at the source (always false when plain).
    pub fn is_masked(&self, vector: u16) -> Result<bool> {
        let index = self.shared.check_vector(vector)?;
        Ok(self.shared.state().masked[index])
    }

    /// Re-points `vector`'s messages: from now on a fire that is signalled
    /// writes `to` instead of the vector's trigger eventfd, or the trigger
    /// again with `None`. What a VMM does with `VFIO_DEVICE_SET_IRQS` on one
    /// vector (QEMU and crosvm switch a masked vector to a userspace eventfd
    /// and back); counted in [`SoftwareSource::repoints`]. A fire racing
    /// with the re-point goes to exactly one of the two eventfds.
    pub fn repoint(&self, vector: u16, to: Option<Arc<EventFd>>) -> Result<()> {
        let index = self.shared.check_vector(vector)?;
        self.shared.state().redirect[index] = to;
        self.shared.repoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Re-points made with [`SoftwareSource::repoint`] since the source was
    /// created.
    pub fn repoints(&self) -> u64 {
        self.shared.repoints.load(Ordering::Relaxed)
    }

    /// Clears every mask bit and pending bit without signalling anything:
    /// the state of a freshly created source (enable state is kept).
    pub fn reset_masks(&self) {
        let mut state = self.shared.state();
        state.masked.fill(false);
        state.pending.fill(false);
    }
}

impl MsixSource for SoftwareSource {
    fn vector_count(&self) -> u16 {
        self.shared.vector_count
    }

    fn features(&self) -> SourceFeatures {
        SourceFeatures {
            maskable: self.shared.maskable,
            dynamic: self.shared.dynamic,
        }
    }

    fn trigger(&self, vector: u16) -> Result<&EventFd> {
        let index = self.shared.check_vector(vector)?;
        Ok(&self.shared.triggers[index])
    }

    fn enable(&mut self, count: u16) -> Result<()> {
        self.shared.check_count(count)?;
        let mut state = self.shared.state();
        state.enabled_count = count;
        state.pending.fill(false);
        Ok(())
    }

    fn enabled_count(&self) -> u16 {
        self.shared.state().enabled_count
    }

    fn grow(&mut self, count: u16) -> Result<()> {
        self.shared.check_count(count)?;
        let mut state = self.shared.state();
        let from = state.enabled_count;
        state.enabled_count = from.max(count);
        if from == 0 || count <= from {
            return Ok(());
        }
        if !self.shared.dynamic {
            // Disabled and enabled again with more: nothing stays pending.
            state.pending.fill(false);
            return Ok(());
        }
        // Newly wired vectors send what they latched while the host held
        // them masked (unless masked here too).
        for v in usize::from(from)..usize::from(state.enabled_count) {
            if state.pending[v] && !state.masked[v] {
                state.pending[v] = false;
                self.shared.signal(&state, v)?;
            }
        }
        Ok(())
    }

    fn disable(&mut self) -> Result<()> {
        let mut state = self.shared.state();
        state.enabled_count = 0;
        state.pending.fill(false);
        Ok(())
    }

    fn mask(&mut self, vector: u16) -> Result<()> {
        let index = self.shared.check_vector(vector)?;
        if !self.shared.maskable {
            return Err(Error::MaskUnsupported { vector });
        }
        self.shared.state().masked[index] = true;
        Ok(())
    }

    fn unmask(&mut self, vector: u16) -> Result<()> {
        let index = self.shared.check_vector(vector)?;
        if !self.shared.maskable {
            return Err(Error::MaskUnsupported { vector });
        }
        let mut state = self.shared.state();
        state.masked[index] = false;
        if state.pending[index] {
            // Clear the bit only once the message is out, so a failed write
            // leaves it pending (PCIe: the function sends the pending message
            // on unmask and then clears the Pending bit).
            self.shared.signal(&state, index)?;
            state.pending[index] = false;
        }
        Ok(())
    }

    fn pending(&self, vector: u16) -> Result<bool> {
        let index = self.shared.check_vector(vector)?;
        Ok(self.shared.state().pending[index])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn enabled_plain(count: u16) -> SoftwareSource {
        let mut source = SoftwareSource::new(count).unwrap();
        source.enable(count).unwrap();
        source
    }

    fn enabled_maskable(count: u16) -> SoftwareSource {
        let mut source = SoftwareSource::maskable(count).unwrap();
        source.enable(count).unwrap();
        source
    }

    /// The eventfd count, consumed; 0 when nothing was signalled.
    fn drain(source: &SoftwareSource, vector: u16) -> u64 {
        match source.trigger(vector).unwrap().read() {
            Ok(count) => count,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => panic!("eventfd read: {e}"),
        }
    }

    #[test]
    fn vector_count_must_be_1_to_2048() {
        assert!(matches!(
            SoftwareSource::new(0),
            Err(Error::InvalidCount {
                count: 0,
                max: 2048
            })
        ));
        assert!(matches!(
            SoftwareSource::maskable(2049),
            Err(Error::InvalidCount { count: 2049, .. })
        ));
        assert_eq!(SoftwareSource::new(2048).unwrap().vector_count(), 2048);
    }

    #[test]
    fn features_follow_the_constructor() {
        let plain = SoftwareSource::new(1).unwrap();
        assert_eq!(plain.features(), SourceFeatures::default());
        let maskable = SoftwareSource::maskable(1).unwrap();
        assert_eq!(
            maskable.features(),
            SourceFeatures {
                maskable: true,
                dynamic: true
            }
        );
    }

    #[test]
    fn fire_on_enabled_vector_writes_its_eventfd() {
        let source = enabled_plain(4);
        assert_eq!(source.fire(2).unwrap(), FireOutcome::Signalled);
        assert_eq!(source.fire(2).unwrap(), FireOutcome::Signalled);
        assert_eq!(drain(&source, 2), 2);
        assert_eq!(drain(&source, 1), 0);
        let stats = source.stats(2).unwrap();
        assert_eq!(
            stats,
            VectorStats {
                fired: 2,
                signalled: 2,
                latched: 0,
                dropped: 0
            }
        );
    }

    #[test]
    fn fire_while_disabled_is_dropped_and_past_the_enabled_count_is_held_until_grown() {
        let mut source = SoftwareSource::maskable(4).unwrap();
        assert_eq!(source.fire(0).unwrap(), FireOutcome::Dropped);
        source.enable(2).unwrap();
        assert_eq!(source.fire(3).unwrap(), FireOutcome::Latched);
        assert!(source.pending(3).unwrap());
        assert_eq!(drain(&source, 3), 0);
        source.grow(4).unwrap();
        assert_eq!(drain(&source, 3), 1, "sent once the vector is wired");
        assert!(!source.pending(3).unwrap());
        source.disable().unwrap();
        assert_eq!(source.enabled_count(), 0);
        assert_eq!(source.fire(1).unwrap(), FireOutcome::Dropped);
        assert_eq!(drain(&source, 0), 0);
        assert_eq!(drain(&source, 1), 0);
        assert_eq!(source.stats(0).unwrap().dropped, 1);
        assert_eq!(source.stats(3).unwrap().latched, 1);

        // A fixed-size source grows by enabling again: nothing stays pending.
        for mut fixed in [
            SoftwareSource::new(4).unwrap(),
            SoftwareSource::maskable_fixed(4).unwrap(),
        ] {
            assert!(!fixed.features().dynamic);
            fixed.enable(2).unwrap();
            assert_eq!(fixed.fire(3).unwrap(), FireOutcome::Latched);
            fixed.grow(4).unwrap();
            assert!(!fixed.pending(3).unwrap());
            assert_eq!(drain(&fixed, 3), 0);
        }
    }

    #[test]
    fn plain_source_cannot_mask_and_has_no_pending_bits() {
        let mut source = enabled_plain(2);
        assert!(matches!(
            source.mask(1),
            Err(Error::MaskUnsupported { vector: 1 })
        ));
        assert!(matches!(
            source.unmask(1),
            Err(Error::MaskUnsupported { vector: 1 })
        ));
        assert!(!source.pending(1).unwrap());
        assert_eq!(source.fire(1).unwrap(), FireOutcome::Signalled);
    }

    #[test]
    fn masked_fire_latches_pending_without_signalling() {
        let mut source = enabled_maskable(4);
        source.mask(1).unwrap();
        assert_eq!(source.fire(1).unwrap(), FireOutcome::Latched);
        assert!(source.pending(1).unwrap());
        assert_eq!(drain(&source, 1), 0);
        assert_eq!(source.stats(1).unwrap().latched, 1);
    }

    #[test]
    fn unmask_signals_latched_message_exactly_once() {
        let mut source = enabled_maskable(4);
        source.mask(1).unwrap();
        source.fire(1).unwrap();
        source.unmask(1).unwrap();
        assert!(!source.pending(1).unwrap());
        assert_eq!(drain(&source, 1), 1);
        source.unmask(1).unwrap();
        assert_eq!(drain(&source, 1), 0);
    }

    #[test]
    fn fires_while_masked_coalesce_into_one_message() {
        let mut source = enabled_maskable(4);
        source.mask(3).unwrap();
        let outcomes = source.fire_n(3, 2).unwrap();
        assert_eq!(outcomes.latched, 2);
        source.unmask(3).unwrap();
        assert_eq!(drain(&source, 3), 1);
    }

    #[test]
    fn unmask_without_pending_signals_nothing() {
        let mut source = enabled_maskable(2);
        source.mask(0).unwrap();
        source.unmask(0).unwrap();
        assert_eq!(drain(&source, 0), 0);
    }

    #[test]
    fn mask_survives_disable_enable_and_grow_until_reset_masks() {
        let mut source = enabled_maskable(4);
        source.mask(0).unwrap();
        source.fire(0).unwrap();
        source.disable().unwrap();
        assert!(!source.pending(0).unwrap(), "disable clears pending bits");
        source.enable(2).unwrap();
        source.grow(4).unwrap();
        assert_eq!(source.enabled_count(), 4);
        assert!(source.is_masked(0).unwrap());
        assert_eq!(source.fire(0).unwrap(), FireOutcome::Latched);
        source.grow(3).unwrap();
        assert_eq!(source.enabled_count(), 4, "grow never shrinks");
        assert!(source.pending(0).unwrap(), "grow keeps pending bits");
        source.reset_masks();
        assert!(!source.is_masked(0).unwrap());
        assert!(!source.pending(0).unwrap());
        assert_eq!(drain(&source, 0), 0, "reset_masks signals nothing");
    }

    #[test]
    fn grow_on_disabled_source_enables() {
        let mut source = SoftwareSource::maskable(8).unwrap();
        source.grow(3).unwrap();
        assert_eq!(source.enabled_count(), 3);
    }

    #[test]
    fn out_of_range_vectors_and_counts_are_errors() {
        let mut source = enabled_maskable(4);
        let out_of_range = |r: Result<()>| {
            assert!(matches!(
                r,
                Err(Error::VectorOutOfRange {
                    vector: 4,
                    count: 4
                })
            ))
        };
        out_of_range(source.fire(4).map(drop));
        out_of_range(source.fire_n(4, 1).map(drop));
        out_of_range(source.stats(4).map(drop));
        out_of_range(source.trigger(4).map(drop));
        out_of_range(source.pending(4).map(drop));
        out_of_range(source.mask(4));
        out_of_range(source.unmask(4));
        for count in [0, 5] {
            assert!(matches!(
                source.enable(count),
                Err(Error::InvalidCount { max: 4, .. })
            ));
            assert!(matches!(
                source.grow(count),
                Err(Error::InvalidCount { max: 4, .. })
            ));
        }
        assert_eq!(source.enabled_count(), 4);
    }

    #[test]
    fn a_repointed_vector_signals_the_new_eventfd_until_pointed_back() {
        let mut source = enabled_maskable(2);
        let elsewhere = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        source.repoint(1, Some(elsewhere.clone())).unwrap();
        assert_eq!(source.fire(1).unwrap(), FireOutcome::Signalled);
        assert_eq!(drain(&source, 1), 0, "the trigger is not written");
        assert_eq!(elsewhere.read().unwrap(), 1);
        assert_eq!(source.fire(0).unwrap(), FireOutcome::Signalled);
        assert_eq!(drain(&source, 0), 1, "other vectors are untouched");
        // A latched message also goes where the vector points at unmask.
        source.mask(1).unwrap();
        source.fire(1).unwrap();
        source.unmask(1).unwrap();
        assert_eq!(elsewhere.read().unwrap(), 1);
        source.repoint(1, None).unwrap();
        source.fire(1).unwrap();
        assert_eq!(drain(&source, 1), 1);
        assert!(elsewhere.read().is_err(), "nothing more arrives there");
        assert_eq!(source.repoints(), 2);
        assert!(matches!(
            source.repoint(2, None),
            Err(Error::VectorOutOfRange {
                vector: 2,
                count: 2
            })
        ));
        assert_eq!(source.repoints(), 2, "a refused re-point is not counted");
    }

    #[test]
    fn clones_share_state_and_eventfds() {
        let device = SoftwareSource::maskable(2).unwrap();
        let mut owned: Box<dyn MsixSource> = Box::new(device.clone());
        owned.enable(2).unwrap();
        owned.mask(1).unwrap();
        assert_eq!(device.fire(1).unwrap(), FireOutcome::Latched);
        assert!(owned.pending(1).unwrap());
        owned.unmask(1).unwrap();
        assert_eq!(owned.trigger(1).unwrap().read().unwrap(), 1);
    }
}
