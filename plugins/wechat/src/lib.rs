//! `wechat` plugin (being written).
