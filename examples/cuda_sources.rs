//! Writes the CUDA C++ that CubeCL generates for every forward, dQ and tiled dK/dV kernel
//! variant, one `.cu` file each, without a GPU: `scripts/gpu/compile-cuda.sh` compiles them
//! with `nvcc`.
//!
//! ```text
//! cargo run --example cuda_sources --features cuda-source -- [DIR]   (default out/cuda-sources)
//! ```

use std::path::PathBuf;

use burn_sparse_video::sparse_attn::cuda_source::kernel_sources;

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "out/cuda-sources".into()),
    );
    let written = kernel_sources().and_then(|sources| {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for source in &sources {
            let path = dir.join(format!("{}.cu", source.name));
            std::fs::write(&path, &source.source)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(sources.len())
    });
    match written {
        Ok(count) => println!("{count} kernels in {}", dir.display()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
