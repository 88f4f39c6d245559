//! Portico's own HTTP/1.1 upstream client, on the `portico-h1` codec: a connection with its
//! buffer (`conn`), the request side of an exchange (`send`), one exchange (`exchange`), and the response body that drives the
//! connection to its end and gives it back to the pool (`body`). Everything runs in the
//! request's task; nothing is spawned per connection or per request.

pub mod body;
pub mod conn;
pub mod exchange;
pub mod send;

pub use body::{H1Body, Release};
pub use conn::{H1Conn, Io};
pub use exchange::{ExchangeError, Failure, exchange};
