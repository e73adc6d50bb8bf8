//! Where the SHA extensions' lanes do not exist (not x86-64): every key signs through
//! ring alone, as [`HmacState::new`] says by giving `None`.

/// No lanes here.
pub(crate) fn available() -> bool {
    false
}

/// Never made here.
#[derive(Clone)]
pub(crate) enum HmacState {}

impl HmacState {
    pub(crate) fn new(_key: &[u8]) -> Option<HmacState> {
        None
    }
}

/// Never made here (no [`HmacState`] exists).
pub(crate) use crate::LaneJob as Job;

/// Never called: no job exists without an [`HmacState`].
pub(crate) fn tags<'a>(count: usize, job: impl Fn(usize) -> Job<'a>, _out: &mut Vec<[u8; 32]>) {
    for i in 0..count {
        match *job(i).state {}
    }
}
