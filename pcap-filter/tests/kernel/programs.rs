//! cBPF programs that the kernel tests and the unit tests of `translate`
//! (which include this file by its path) both run.

use super::CbpfInsn;

/// ld #1; ja +2 (to 4); 2: txa (reads X, never written); ret a;
/// 4: ja -3 (to 2); ret #0: an instruction reached only through a
/// backward jump.
pub fn reached_only_backward() -> Vec<CbpfInsn> {
    vec![
        CbpfInsn::stmt(0x00, 1),
        CbpfInsn::stmt(0x05, 2),
        CbpfInsn::stmt(0x87, 0),
        CbpfInsn::stmt(0x16, 0),
        CbpfInsn::stmt(0x05, (-3i32) as u32),
        CbpfInsn::stmt(0x06, 0),
    ]
}
