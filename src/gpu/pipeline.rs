//! Shader sources, the pipeline cache and recorded launches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Gpu, Result, View};

/// Every shader file shipped, by name (the file name without `.wgsl`).
pub const SHADERS: &[(&str, &str)] = &[
    ("act", include_str!("../../shaders/act.wgsl")),
    ("philox", include_str!("../../shaders/philox.wgsl")),
    ("matmul_params", include_str!("../../shaders/matmul_params.wgsl")),
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    ("matmul_sg_common", include_str!("../../shaders/matmul_sg_common.wgsl")),
    ("matmul_sg", include_str!("../../shaders/matmul_sg.wgsl")),
    ("matmul_sg64_body", include_str!("../../shaders/matmul_sg64_body.wgsl")),
    ("matmul_sg64", include_str!("../../shaders/matmul_sg64.wgsl")),
    ("matmul_sgtex", include_str!("../../shaders/matmul_sgtex.wgsl")),
    ("phase_n1", include_str!("../../shaders/phase_n1.wgsl")),
    ("wide", include_str!("../../shaders/wide.wgsl")),
    ("texel", include_str!("../../shaders/texel.wgsl")),
    ("conv", include_str!("../../shaders/conv.wgsl")),
    ("conv_grad", include_str!("../../shaders/conv_grad.wgsl")),
    ("conv_grad64", include_str!("../../shaders/conv_grad64.wgsl")),
    ("elementwise", include_str!("../../shaders/elementwise.wgsl")),
    ("sample", include_str!("../../shaders/sample.wgsl")),
    ("sample_backward", include_str!("../../shaders/sample_backward.wgsl")),
    ("elbo", include_str!("../../shaders/elbo.wgsl")),
    ("reduce", include_str!("../../shaders/reduce.wgsl")),
    ("optim_common", include_str!("../../shaders/optim_common.wgsl")),
    ("optim", include_str!("../../shaders/optim.wgsl")),
    ("optim64", include_str!("../../shaders/optim64.wgsl")),
    ("cursor", include_str!("../../shaders/cursor.wgsl")),
    ("data", include_str!("../../shaders/data.wgsl")),
    ("vq", include_str!("../../shaders/vq.wgsl")),
    ("prior", include_str!("../../shaders/prior.wgsl")),
    ("latent_prior", include_str!("../../shaders/latent_prior.wgsl")),
    ("iwae", include_str!("../../shaders/iwae.wgsl")),
    ("ae", include_str!("../../shaders/ae.wgsl")),
    ("ceiling", include_str!("../../shaders/ceiling.wgsl")),
    ("ceiling64", include_str!("../../shaders/ceiling64.wgsl")),
];

/// Files that are only included by others (functions, no entry points).
pub const SNIPPETS: &[&str] = &[
    "act",
    "philox",
    "matmul_params",
    "matmul_sg_common",
    "matmul_sg64_body",
    "wide",
    "optim_common",
    "cursor",
    "texel",
];

fn raw(name: &str) -> &'static str {
    SHADERS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s).unwrap_or_else(|| panic!("no shader named {name}"))
}

/// The shader's source with `//!include X.wgsl` lines replaced by the named file.
pub fn shader_source(name: &str) -> String {
    let mut out = String::new();
    for line in raw(name).lines() {
        if let Some(inc) = line.trim().strip_prefix("//!include ") {
            let inc = inc.trim().trim_end_matches(".wgsl");
            out += &shader_source(inc);
        } else {
            out += line;
        }
        out.push('\n');
    }
    out
}

/// Pipeline-overridable constants, as WGSL names and values.
pub type Constants = Vec<(&'static str, f64)>;

#[derive(Hash, PartialEq, Eq, Clone)]
struct Key {
    shader: &'static str,
    entry: &'static str,
    constants: Vec<(&'static str, u64)>,
}

/// Pipelines keyed by (shader, entry point, constants); shader modules by name.
#[derive(Default)]
pub struct PipelineCache {
    modules: Mutex<HashMap<&'static str, Arc<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<Key, Arc<wgpu::ComputePipeline>>>,
}

impl PipelineCache {
    pub fn len(&self) -> usize {
        self.pipelines.lock().unwrap().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Gpu {
    fn module(&self, shader: &'static str) -> Arc<wgpu::ShaderModule> {
        let mut modules = self.pipelines.modules.lock().unwrap();
        modules
            .entry(shader)
            .or_insert_with(|| {
                let src = shader_source(shader);
                // Every index in our kernels is bounds-checked by the kernel itself or by the host
                // shape checks; the runtime checks wgpu would add cost a clamp per load.
                let desc =
                    wgpu::ShaderModuleDescriptor { label: Some(shader), source: wgpu::ShaderSource::Wgsl(src.into()) };
                let module =
                    unsafe { self.device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) };
                Arc::new(module)
            })
            .clone()
    }

    /// The compute pipeline for `shader::entry` with the given override constants (built once).
    pub fn pipeline(
        &self,
        shader: &'static str,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = Key { shader, entry, constants: constants.iter().map(|(n, v)| (*n, v.to_bits())).collect() };
        if let Some(p) = self.pipelines.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let module = self.module(shader);
        let label = format!("{shader}::{entry}{constants:?}");
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        self.check()?;
        let pipeline = Arc::new(pipeline);
        self.pipelines.pipelines.lock().unwrap().insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Builds one launch: the pipeline, a uniform holding `params`, and a bind group with the uniform at
    /// binding 0 and `bindings` at their numbers.
    #[allow(clippy::too_many_arguments)]
    pub fn launch<P: bytemuck::Pod>(
        &self,
        label: String,
        shader: &'static str,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        params: Option<&P>,
        bindings: &[(u32, View<'_>)],
        groups: [u32; 3],
    ) -> Result<Launch> {
        self.launch_tex(label, shader, entry, constants, params, bindings, &[], Vec::new(), groups)
    }

    /// [`Gpu::launch`] with textures bound too, and the copies that fill them (recorded before the
    /// dispatch; none for an aliased texture, src/gpu/alias.rs).
    #[allow(clippy::too_many_arguments)]
    pub fn launch_tex<P: bytemuck::Pod>(
        &self,
        label: String,
        shader: &'static str,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        params: Option<&P>,
        bindings: &[(u32, View<'_>)],
        textures: &[(u32, OperandTexture)],
        fills: Vec<TexFill>,
        groups: [u32; 3],
    ) -> Result<Launch> {
        let pipeline = self.pipeline(shader, entry, constants)?;
        let uniform = params.map(|p| self.uniform(&format!("{label}.params"), p));
        let mut entries: Vec<wgpu::BindGroupEntry> = Vec::new();
        if let Some(u) = &uniform {
            entries.push(wgpu::BindGroupEntry { binding: 0, resource: u.as_entire_binding() });
        }
        for (b, v) in bindings {
            entries.push(wgpu::BindGroupEntry { binding: *b, resource: v.binding() });
        }
        for (b, t) in textures {
            entries.push(wgpu::BindGroupEntry { binding: *b, resource: wgpu::BindingResource::TextureView(&t.1) });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        self.check()?;
        Ok(Launch { label, entry, pipeline, bind_group, groups, fills, work: Work::None, _uniform: uniform })
    }

    /// Records `program` `repeat` times into one command buffer and submits it (no wait).
    pub fn submit(&self, program: &Program, repeat: usize) {
        let mut enc =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(&program.label) });
        record_launches(&mut enc, &program.label, (0..repeat).flat_map(|_| program.launches.iter()));
        self.queue.submit([enc.finish()]);
    }

    /// Records one launch `repeat` times into one command buffer and submits it (no wait).
    pub fn submit_launch(&self, launch: &Launch, repeat: usize) {
        let label = Some(launch.label.as_str());
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label });
        record_launches(&mut enc, &launch.label, std::iter::repeat_n(launch, repeat));
        self.queue.submit([enc.finish()]);
    }

    /// Runs one launch and waits (tests and benchmarks).
    pub fn run(&self, launch: &Launch) -> Result<()> {
        self.submit_launch(launch, 1);
        self.sync()
    }
}

/// One kernel launch, fully bound: replaying it costs a set_pipeline, a set_bind_group and a dispatch.
pub struct Launch {
    pub label: String,
    /// The kernel: the shader's entry point.
    pub entry: &'static str,
    pub pipeline: Arc<wgpu::ComputePipeline>,
    pub bind_group: wgpu::BindGroup,
    pub groups: [u32; 3],
    /// Copies recorded before the dispatch, outside any compute pass: the textures it reads.
    pub fills: Vec<TexFill>,
    /// What it computes or moves, where its launcher states it: the benchmark's rates
    /// (`vaegpu bench`, `bench --launches`).
    pub work: Work,
    _uniform: Option<wgpu::Buffer>,
}

impl Launch {
    /// This launch, stating its work.
    pub fn with_work(mut self, work: Work) -> Launch {
        self.work = work;
        self
    }
}

/// The work of one launch, for the benchmark's rates and fractions of the adapter's ceilings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Work {
    /// Not stated (bookkeeping launches: a scan, a norm's last step, the step counter).
    #[default]
    None,
    /// Arithmetic-bound: floating-point operations (an FMA counts 2).
    Flops(f64),
    /// Memory-bound: the least bytes it must read and write.
    Bytes { read: f64, write: f64 },
}

impl Work {
    /// Memory-bound work of `read` and `write` 32-bit words.
    pub fn words(read: usize, write: usize) -> Work {
        Work::Bytes { read: 4.0 * read as f64, write: 4.0 * write as f64 }
    }
}

/// Texels a row of an operand texture ([`TexFill`]): 32 KiB rows, a multiple of the 256 bytes a
/// buffer → texture copy needs its rows to be, so any buffer region copies as whole rows and one
/// partial row. shaders/texel.wgsl's TW_SHIFT is its log2.
pub const TEX_WIDTH: u32 = 2048;

/// An rgba32float texture TEX_WIDTH texels wide and its view.
pub type OperandTexture = Arc<(wgpu::Texture, wgpu::TextureView)>;

/// A buffer region copied into an operand texture right before the launch that reads it: float i of
/// the region is component i mod 4 of texel (i/4 mod TEX_WIDTH, i/4 / TEX_WIDTH).
#[derive(Clone)]
pub struct TexFill {
    pub buffer: wgpu::Buffer,
    /// Bytes into the buffer (a multiple of 16).
    pub offset: u64,
    /// Texels (4 floats each) copied.
    pub texels: u32,
    pub texture: OperandTexture,
}

impl TexFill {
    fn record(&self, enc: &mut wgpu::CommandEncoder) {
        let row_bytes = TEX_WIDTH * 16;
        let (full, rem) = (self.texels / TEX_WIDTH, self.texels % TEX_WIDTH);
        let copy = |enc: &mut wgpu::CommandEncoder, row: u32, width: u32, height: u32| {
            enc.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer: &self.buffer,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset: self.offset + u64::from(row) * u64::from(row_bytes),
                        bytes_per_row: Some(row_bytes),
                        rows_per_image: None,
                    },
                },
                wgpu::TexelCopyTextureInfo {
                    texture: &self.texture.0,
                    mip_level: 0,
                    origin: wgpu::Origin3d { x: 0, y: row, z: 0 },
                    aspect: wgpu::TextureAspect::All,
                },
                wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
            );
        };
        if full > 0 {
            copy(enc, 0, TEX_WIDTH, full);
        }
        if rem > 0 {
            copy(enc, full, rem, 1);
        }
    }
}

/// Records `launches` in order into `enc`: runs of them in one compute pass, each launch's texture
/// fills ([`Launch::fills`]) between passes, before it.
pub fn record_launches<'a>(enc: &mut wgpu::CommandEncoder, label: &str, launches: impl Iterator<Item = &'a Launch>) {
    let mut run: Vec<&Launch> = Vec::new();
    let flush = |enc: &mut wgpu::CommandEncoder, run: &mut Vec<&Launch>| {
        if !run.is_empty() {
            let mut pass =
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes: None });
            for l in run.drain(..) {
                l.record(&mut pass);
            }
        }
    };
    for l in launches {
        if !l.fills.is_empty() {
            flush(enc, &mut run);
            for f in &l.fills {
                f.record(enc);
            }
        }
        run.push(l);
    }
    flush(enc, &mut run);
}

impl Launch {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]);
    }
}

/// A fixed list of launches over fixed buffers: one training step, one eval batch, a decode.
pub struct Program {
    pub label: String,
    pub launches: Vec<Launch>,
}

impl Program {
    pub fn new(label: &str) -> Self {
        Program { label: label.to_string(), launches: Vec::new() }
    }
    pub fn push(&mut self, l: Launch) {
        self.launches.push(l);
    }
    pub fn extend(&mut self, ls: impl IntoIterator<Item = Launch>) {
        self.launches.extend(ls);
    }
}

/// Splits a 1-D count of workgroups into (x, y) within the per-dimension limit.
pub fn grid_1d(workgroups: u32) -> [u32; 3] {
    if workgroups <= 65535 {
        [workgroups.max(1), 1, 1]
    } else {
        [65535, workgroups.div_ceil(65535), 1]
    }
}
