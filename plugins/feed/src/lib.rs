//! `feed` plugin (being written).
