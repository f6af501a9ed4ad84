//! Workspace integration tests on real KVM.
