//! Body encodings: raw JSON, percent-encoded JSON, or form fields.
//! (Helper fills this in; see the contract in the module docs once written.)
