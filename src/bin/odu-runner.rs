//! `odu-runner --stdio`: serves one lane over stdin/stdout. Only protocol frames go to stdout.

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("--stdio") => {}
        Some("--version") => {
            println!("odu-runner {}", odu::version::long());
            return;
        }
        _ => {
            eprintln!(
                "usage: odu-runner --stdio\n(serves one lane of an odu run over stdin and stdout; started by odu, not by hand)"
            );
            std::process::exit(2);
        }
    }
    odu::diag::init(odu::diag::Process::Runner);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        let (reader, writer) = odu::runner::stdio();
        odu::runner::serve(reader, writer, shutdown).await
    });
    odu::clock::report_peak_rss("odu-runner");
    if let Err(e) = result {
        eprintln!("odu-runner: {e}");
        std::process::exit(1);
    }
}
