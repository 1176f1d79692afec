//! The .klt writer and reader agree.
