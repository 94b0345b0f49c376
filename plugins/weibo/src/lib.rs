//! `weibo` plugin (being written).
