//! tmcd library.
