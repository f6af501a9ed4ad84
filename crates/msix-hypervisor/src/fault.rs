//! [`FaultyVm`]: fails chosen calls of an [`MsixVm`], for tests of how the
//! layers above contain a failing host.

use std::sync::{Mutex, MutexGuard, PoisonError};

use vmm_sys_util::eventfd::EventFd;

use crate::{Error, MsiMessage, MsixVm, Op, Result, RoutingEntry};

/// When a fault rule fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// On the n-th call of the operation counted from when the rule was
    /// added (1 = the next call), once.
    Nth(u64),
    /// On every call from the n-th on (1 = from the next call).
    From(u64),
}

/// A fault that was injected: the operation, which call of it (1-based,
/// over the wrapper's life) and the errno returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InjectedFault {
    /// The operation that failed.
    pub op: Op,
    /// Its call number over the wrapper's life, from 1.
    pub call: u64,
    /// The errno returned.
    pub errno: i32,
}

#[derive(Debug)]
struct Rule {
    op: Op,
    /// Call number (over the wrapper's life) the rule starts at.
    first: u64,
    once: bool,
    errno: i32,
}

#[derive(Debug, Default)]
struct State {
    calls: [u64; Op::ALL.len()],
    rules: Vec<Rule>,
    injected: Vec<InjectedFault>,
}

/// Wraps an [`MsixVm`] and makes chosen calls fail with a chosen errno
/// instead of reaching the hypervisor. Every other call passes through.
///
/// ```
/// use msix_hypervisor::{FaultyVm, MsixVm, Op, Trigger};
/// # use msix_hypervisor::fake::FakeVm;
/// let vm = FaultyVm::new(FakeVm::new(4096));
/// vm.fail(Op::SetGsiRouting, Trigger::Nth(2), libc::ENOMEM);
/// assert!(vm.set_gsi_routing(&[]).is_ok());
/// assert_eq!(vm.set_gsi_routing(&[]).unwrap_err().errno, libc::ENOMEM);
/// assert!(vm.set_gsi_routing(&[]).is_ok());
/// assert_eq!(vm.injected().len(), 1);
/// ```
#[derive(Debug)]
pub struct FaultyVm<V> {
    inner: V,
    state: Mutex<State>,
}

impl<V: MsixVm> FaultyVm<V> {
    /// Passes every call to `inner` until a fault is armed.
    pub fn new(inner: V) -> Self {
        FaultyVm {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Counters and rules stay consistent whatever a panicking holder did.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Arms a fault: calls of `op` selected by `trigger` fail with `errno`.
    pub fn fail(&self, op: Op, trigger: Trigger, errno: i32) {
        let mut state = self.state();
        let done = state.calls[op as usize];
        let (n, once) = match trigger {
            Trigger::Nth(n) => (n, true),
            Trigger::From(n) => (n, false),
        };
        state.rules.push(Rule {
            op,
            first: done + n.max(1),
            once,
            errno,
        });
    }

    /// Disarms every fault (the record of injected ones stays).
    pub fn heal(&self) {
        self.state().rules.clear();
    }

    /// Calls of `op` so far (failed ones included).
    pub fn calls(&self, op: Op) -> u64 {
        self.state().calls[op as usize]
    }

    /// Every fault injected so far, in order.
    pub fn injected(&self) -> Vec<InjectedFault> {
        self.state().injected.clone()
    }

    /// The wrapped VM.
    pub fn inner(&self) -> &V {
        &self.inner
    }

    /// Counts a call of `op` and says whether it must fail.
    fn check(&self, op: Op) -> Result<()> {
        let mut state = self.state();
        state.calls[op as usize] += 1;
        let call = state.calls[op as usize];
        let hit = state.rules.iter().position(|r| {
            r.op == op
                && if r.once {
                    call == r.first
                } else {
                    call >= r.first
                }
        });
        if let Some(i) = hit {
            let errno = state.rules[i].errno;
            if state.rules[i].once {
                state.rules.remove(i);
            }
            state.injected.push(InjectedFault { op, call, errno });
            return Err(Error::new(op, errno));
        }
        Ok(())
    }
}

impl<V: MsixVm> MsixVm for FaultyVm<V> {
    fn max_routes(&self) -> u32 {
        self.inner.max_routes()
    }

    unsafe fn set_readonly_memory(
        &self,
        slot: u32,
        gpa: u64,
        size: u64,
        host_addr: u64,
    ) -> Result<()> {
        self.check(Op::SetMemoryRegion)?;
        // SAFETY: the caller upholds the same contract.
        unsafe { self.inner.set_readonly_memory(slot, gpa, size, host_addr) }
    }

    fn register_ioeventfd(&self, fd: &EventFd, gpa: u64, datamatch: u32) -> Result<()> {
        self.check(Op::IoeventfdAssign)?;
        self.inner.register_ioeventfd(fd, gpa, datamatch)
    }

    fn unregister_ioeventfd(&self, fd: &EventFd, gpa: u64, datamatch: u32) -> Result<()> {
        self.check(Op::IoeventfdDeassign)?;
        self.inner.unregister_ioeventfd(fd, gpa, datamatch)
    }

    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        self.check(Op::IrqfdAssign)?;
        self.inner.register_irqfd(fd, gsi)
    }

    fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        self.check(Op::IrqfdDeassign)?;
        self.inner.unregister_irqfd(fd, gsi)
    }

    fn set_gsi_routing(&self, entries: &[RoutingEntry]) -> Result<()> {
        self.check(Op::SetGsiRouting)?;
        self.inner.set_gsi_routing(entries)
    }

    fn signal_msi(&self, message: &MsiMessage) -> Result<()> {
        self.check(Op::SignalMsi)?;
        self.inner.signal_msi(message)
    }
}
