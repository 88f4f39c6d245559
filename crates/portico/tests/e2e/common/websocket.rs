//! WebSocket: an echo server and a client connecting through Portico.

use std::net::SocketAddr;
use std::sync::Arc;

/// A WebSocket echo server; counts the connections it accepted.
pub async fn echo_server() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a2 = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            a2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(msg)) = futures_util::StreamExt::next(&mut ws).await {
                    let echo = matches!(
                        msg,
                        tokio_tungstenite::tungstenite::Message::Text(_)
                            | tokio_tungstenite::tungstenite::Message::Binary(_)
                    );
                    if matches!(msg, tokio_tungstenite::tungstenite::Message::Close(_))
                        || (echo && futures_util::SinkExt::send(&mut ws, msg).await.is_err())
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

pub async fn ws_connect(
    port: u16,
    path: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let url = format!("ws://127.0.0.1:{port}{path}");
    tokio_tungstenite::client_async(url, tcp)
        .await
        .map(|(ws, _)| ws)
}
