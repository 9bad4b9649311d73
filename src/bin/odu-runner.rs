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
    // Before the runtime and the link open theirs: the slots a node's descriptors are handed
    // over in are then among the process's lowest.
    #[cfg(target_os = "linux")]
    odu::runner::clone::prepare();
    // One thread: a runner's work is spawning nodes and moving their bytes, each step short;
    // with a second worker every node's exit woke the other thread (a context switch each way)
    // for nothing, and a 1 GiB log moves as fast on one thread.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
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
        odu::runner::serve(reader, writer, shutdown, odu::runner::Host::Own).await
    });
    odu::clock::report_peak_rss("odu-runner");
    if let Err(e) = result {
        eprintln!("odu-runner: {e}");
        std::process::exit(1);
    }
}
