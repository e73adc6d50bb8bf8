//! Sans-IO HTTP/1.1 request encoder and incremental response/request parsers
#![forbid(unsafe_code)]
