//! sendwerk-dsn (being written)
