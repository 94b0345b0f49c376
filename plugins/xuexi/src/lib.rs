//! `xuexi` plugin (being written).
