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

/// One message to authenticate (see the x86-64 module); never made here.
#[derive(Clone, Copy)]
pub(crate) struct Job<'a> {
    pub(crate) state: &'a HmacState,
    pub(crate) head: &'a [u8],
    pub(crate) body: &'a [u8],
    pub(crate) tail: &'a [u8],
}

/// Never called: no job exists without an [`HmacState`].
pub(crate) fn tags<'a>(count: usize, job: impl Fn(usize) -> Job<'a>, _out: &mut Vec<[u8; 32]>) {
    for i in 0..count {
        match *job(i).state {}
    }
}
