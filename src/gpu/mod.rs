//! GPU context: adapter choice, device limits, error capture, buffers and readback.

pub mod alias;
pub mod pipeline;

use std::sync::{Arc, Mutex};

pub use pipeline::{Launch, PipelineCache, Program, Work};

/// Every way the GPU side can fail, as a value.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter found{0}; on Linux without a GPU install lavapipe: apt-get install mesa-vulkan-drivers libvulkan1")]
    NoAdapter(String),
    #[error("could not create a device on adapter '{adapter}': {message}")]
    RequestDevice { adapter: String, message: String },
    #[error(
        "adapter '{adapter}' cannot fit this model: limit {limit} is {have}, the model needs {need} ({} more, {:.1}x the limit)",
        need.saturating_sub(*have),
        *need as f64 / (*have).max(1) as f64
    )]
    Limit { adapter: String, limit: &'static str, have: u64, need: u64 },
    #[error("GPU validation error on '{adapter}': {message}")]
    Validation { adapter: String, message: String },
    #[error(
        "GPU out of memory on '{adapter}': {message} (a smaller --batch needs less; so does --conv gather, whose \
         conv launches keep no im2col matrices)"
    )]
    OutOfMemory { adapter: String, message: String },
    #[error("GPU device lost on '{adapter}': {message}")]
    DeviceLost { adapter: String, message: String },
    #[error("GPU internal error on '{adapter}': {message}")]
    Internal { adapter: String, message: String },
    #[error("reading back '{label}' failed: {message}")]
    Readback { label: String, message: String },
    #[error("bad kernel arguments for {op}: {message}")]
    Shape { op: &'static str, message: String },
    #[error("unknown backend '{0}' (expected vulkan, metal, dx12 or gl)")]
    Backend(String),
    #[error("backend '{0}' is not in this build ({1})")]
    BackendNotBuilt(String, &'static str),
}

pub type Result<T> = std::result::Result<T, GpuError>;

/// How to choose the adapter. Empty fields fall back to WGPU_BACKEND / WGPU_ADAPTER_NAME, then to
/// "prefer a discrete GPU".
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// vulkan | metal | dx12 | gl
    pub backend: Option<String>,
    /// Case-insensitive substring of the adapter name.
    pub adapter: Option<String>,
    /// Force a CPU adapter (lavapipe, WARP, SwiftShader).
    pub cpu: bool,
    /// Which matmul kernel the dense layers use; `Auto` times both on the adapter the first time it
    /// is seen and caches the choice (see [`crate::kernels::tune::choose_matmul`]).
    pub matmul: MatmulKernel,
    /// Which conv kernel the layers use (see [`ConvKernel`]); `Auto`: the matmul forms on CPU adapters,
    /// on GPUs the fastest of the three timed the first time the adapter is seen, then cached (see
    /// [`crate::kernels::tune::choose_conv`]).
    pub conv: ConvKernel,
    /// Split the K of products with few output tiles over workgroups ([`Gpu::split_k`]); None: on
    /// GPUs, not on CPU adapters.
    pub split_k: Option<bool>,
    /// Invocations per example of the loss reductions ([`Gpu::row_lanes`]: a power of two from 2 to
    /// 64); None: 64 on GPUs, 8 on CPU adapters.
    pub row_lanes: Option<u32>,
    /// The subgroup matmul, Adam and col2im through 64-bit accesses ([`Gpu::wide_loads`]); None: on
    /// CPU adapters with 64-bit integers in shaders.
    pub wide_loads: Option<bool>,
    /// The subgroup matmul reading its operands through textures ([`Gpu::tex_operands`]); None: as
    /// [`GpuOptions::wide_loads`].
    pub tex_operands: Option<bool>,
    /// Large storage buffers in memory the operand textures alias, so that no copy fills them
    /// ([`Gpu::alias_operands`]); None: wherever the device allows it (lavapipe).
    pub alias_operands: Option<bool>,
}

/// The matmul kernel variants: register-blocked without workgroup memory (made for CPU adapters such
/// as lavapipe, which run invocations as SIMD lanes and pay dearly for barriers), the same with the
/// rows of A shared through subgroup broadcasts (shaders/matmul_sg.wgsl: CPU adapters with subgroups of
/// 8 or more lanes), or workgroup-memory tiles (made for discrete GPUs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatmulKernel {
    #[default]
    Auto,
    Register,
    Subgroup,
    Tiled,
}

impl std::str::FromStr for MatmulKernel {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(MatmulKernel::Auto),
            "register" => Ok(MatmulKernel::Register),
            "subgroup" => Ok(MatmulKernel::Subgroup),
            "tiled" => Ok(MatmulKernel::Tiled),
            _ => Err(format!("unknown matmul kernel '{s}' (auto, register, subgroup or tiled)")),
        }
    }
}

impl std::fmt::Display for MatmulKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MatmulKernel::Auto => "auto",
            MatmulKernel::Register => "register",
            MatmulKernel::Subgroup => "subgroup",
            MatmulKernel::Tiled => "tiled",
        })
    }
}

/// The conv kernels' variants: one gather per output element group without workgroup memory (the
/// only one for a launch with no other form), an implicit GEMM through workgroup-memory tiles
/// (`conv_tiled`, made for GPUs; layers with 16+ output channels), or the matmul forms (an im2col or
/// col2im launch around one matmul, `ConvGather::launches`; where the launch has one: on a CPU adapter
/// every such launch, on a GPU those with 16+ output channels).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvKernel {
    #[default]
    Auto,
    Gather,
    Tiled,
    Matmul,
}

impl std::str::FromStr for ConvKernel {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(ConvKernel::Auto),
            "gather" => Ok(ConvKernel::Gather),
            "tiled" => Ok(ConvKernel::Tiled),
            "matmul" => Ok(ConvKernel::Matmul),
            _ => Err(format!("unknown conv kernel '{s}' (auto, gather, tiled or matmul)")),
        }
    }
}

impl std::fmt::Display for ConvKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConvKernel::Auto => "auto",
            ConvKernel::Gather => "gather",
            ConvKernel::Tiled => "tiled",
            ConvKernel::Matmul => "matmul",
        })
    }
}

/// Summary of one adapter, for logs, `vaegpu info` and checkpoint metadata.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub vendor: u32,
    pub device: u32,
}

impl AdapterSummary {
    pub fn of(info: &wgpu::AdapterInfo) -> Self {
        AdapterSummary {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend).to_lowercase(),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            vendor: info.vendor,
            device: info.device,
        }
    }
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {}", self.name, self.backend, self.device_type)?;
        if !self.driver.is_empty() {
            write!(f, ", {} {}", self.driver, self.driver_info)?;
        }
        write!(f, ")")
    }
}

pub fn parse_backend(name: &str) -> Result<wgpu::Backends> {
    match name.to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => Ok(wgpu::Backends::VULKAN),
        "metal" | "mtl" if cfg!(target_vendor = "apple") => Ok(wgpu::Backends::METAL),
        "dx12" | "d3d12" if cfg!(windows) => Ok(wgpu::Backends::DX12),
        "gl" | "gles" | "opengl" if cfg!(feature = "gl") => Ok(wgpu::Backends::GL),
        b @ ("metal" | "mtl") => Err(GpuError::BackendNotBuilt(b.into(), "Metal exists on Apple systems only")),
        b @ ("dx12" | "d3d12") => Err(GpuError::BackendNotBuilt(b.into(), "DX12 exists on Windows only")),
        b @ ("gl" | "gles" | "opengl") => {
            Err(GpuError::BackendNotBuilt(b.into(), "OpenGL is opt-in: build with `--features gl`"))
        }
        other => Err(GpuError::Backend(other.to_string())),
    }
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    desc.flags = wgpu::InstanceFlags::empty();
    wgpu::Instance::new(desc)
}

fn resolve_backends(opts: &GpuOptions) -> Result<wgpu::Backends> {
    match opts.backend.clone().or_else(|| std::env::var("WGPU_BACKEND").ok()) {
        Some(b) if !b.is_empty() => parse_backend(&b),
        _ => Ok(wgpu::Backends::all()),
    }
}

/// All adapters the chosen backends expose. Without a backend named, the primary backends (Vulkan,
/// Metal, DX12) are asked first and OpenGL only when they have no adapter.
pub fn list_adapters(opts: &GpuOptions) -> Result<Vec<wgpu::Adapter>> {
    let backends = resolve_backends(opts)?;
    if backends == wgpu::Backends::all() {
        let primary = wgpu::Backends::PRIMARY;
        let found = pollster::block_on(instance(primary).enumerate_adapters(primary));
        if !found.is_empty() {
            return Ok(found);
        }
    }
    Ok(pollster::block_on(instance(backends).enumerate_adapters(backends)))
}

fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// Chooses the adapter: name filter, CPU filter, then discrete > integrated > virtual > other > CPU,
/// Vulkan first among equals.
pub fn choose_adapter(opts: &GpuOptions) -> Result<wgpu::Adapter> {
    let name = opts.adapter.clone().or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok()).filter(|s| !s.is_empty());
    let mut adapters = list_adapters(opts)?;
    if let Some(n) = &name {
        let n = n.to_lowercase();
        adapters.retain(|a| a.get_info().name.to_lowercase().contains(&n));
    }
    if opts.cpu {
        adapters.retain(|a| a.get_info().device_type == wgpu::DeviceType::Cpu);
    }
    // Compute needs compute shaders: drop downlevel adapters that lack them.
    adapters.retain(|a| a.get_downlevel_capabilities().flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS));
    adapters.sort_by_key(|a| {
        let i = a.get_info();
        (type_rank(i.device_type), u32::from(i.backend != wgpu::Backend::Vulkan))
    });
    adapters.into_iter().next().ok_or_else(|| {
        let mut what = String::new();
        if let Some(n) = name {
            what += &format!(" matching '{n}'");
        }
        if opts.cpu {
            what += " of CPU type";
        }
        if let Some(b) = &opts.backend {
            what += &format!(" on backend {b}");
        }
        GpuError::NoAdapter(what)
    })
}

/// What a model asks of the device; checked against the adapter before the device is created.
#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    pub max_buffer_bytes: u64,
    pub max_binding_bytes: u64,
    pub max_storage_buffers_per_stage: u32,
}

/// The device and queue with captured errors.
pub struct Gpu {
    /// First, so dropped first: it may free Vulkan handles (src/gpu/alias.rs), which needs the device
    /// alive ([`Gpu::device`] keeps it so while it lives; wgpu's buffers and textures do after).
    aliasing: Option<alias::Aliasing>,
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub summary: AdapterSummary,
    pub limits: wgpu::Limits,
    errors: Arc<Mutex<Vec<GpuError>>>,
    pub pipelines: PipelineCache,
    /// The matmul kernel dense layers use where a launch does not force one (never `Auto`).
    pub matmul: MatmulKernel,
    /// The conv kernel where a launch does not force one (never `Auto`; see [`ConvKernel`]).
    pub conv: ConvKernel,
    /// The device has subgroup operations with subgroups of at least 8 invocations (the SUBGROUP
    /// feature was requested): shaders/matmul_sg.wgsl can run.
    pub subgroups: bool,
    /// The device has 64-bit integers in shaders (the SHADER_INT64 feature was requested).
    pub int64: bool,
    /// Weight gradients split the K of their products (the batch's rows or pixels) over workgroups
    /// where their few output tiles would leave the device idle ([`crate::kernels::matmul::k_splits`]),
    /// and so do dense forwards and input gradients where the tiled matmul is the choice
    /// ([`crate::kernels::matmul::epilogue_k_splits`]): true on GPUs, false on CPU adapters, whose few
    /// cores the tiles already fill. Settable (tests run the GPUs' launches on lavapipe).
    pub split_k: bool,
    /// Invocations per workgroup of the per-example loss reductions (shaders elbo, iwae's logw_rows,
    /// ae's losses and penalties, prior's ce_forward and ce_rows, latent_prior's mog_backward_params;
    /// their override RWG; elbo's logvar_grad takes 256 where this is 64): 64 on GPUs; 8 on CPU
    /// adapters, where one 8-lane batch per workgroup takes no turns at the reduction's barriers
    /// (lavapipe runs a workgroup's batches in turn at each one): the ELBO ran 2x faster so. Settable
    /// (tests run both; `--row-lanes`).
    pub row_lanes: u32,
    /// Kernels that lavapipe's per-component access loops slow down read and write through 64-bit
    /// components, two floats in each (shaders/wide.wgsl): the subgroup matmul as
    /// shaders/matmul_sg64.wgsl where the shape allows ([`crate::kernels::matmul::Matmul::sg64_ok`]),
    /// Adam as optim64.wgsl's adam_v8, col2im as conv_grad64.wgsl's col2im64 where N is a multiple of 8.
    /// The same bits as their 32-bit forms. True on CPU adapters with 64-bit integers in shaders
    /// (SHADER_INT64, requested wherever the adapter has it; lavapipe has them); false on GPUs, whose
    /// loads have no such loops (untimed there). Settable (`--wide-loads true|false`: A/B timing),
    /// never to true on a device without 64-bit integers.
    pub wide_loads: bool,
    /// The subgroup matmul's 64-bit form reads op(A) and op(B) from textures (shaders/matmul_sgtex.wgsl):
    /// textures over the operands' own buffers where [`Gpu::alias_operands`] is on, else filled by a copy
    /// recorded before each launch; where the shape allows and the copies are small beside the product
    /// ([`crate::kernels::matmul::Matmul::tex_ok`]). On lavapipe an image load is a
    /// branch-free gather, a storage-buffer load a per-lane loop. True where [`Gpu::wide_loads`] is on
    /// by default (CPU adapters with 64-bit integers); false on GPUs (untimed there). Settable
    /// (`--tex-operands true|false`).
    pub tex_operands: bool,
    /// Operand textures by (operand, height in rows, a power of two), shared by the launches that use
    /// them: each launch fills its own before its dispatch.
    operand_textures: Mutex<std::collections::HashMap<(u8, u32), crate::gpu::pipeline::OperandTexture>>,
    /// Storage buffers of [`ALIAS_MIN_BYTES`] or more are made in memory that linear images alias, and
    /// the texture form reads such an operand through them with no copy (src/gpu/alias.rs): on
    /// lavapipe, where every dispatch completes before the next starts. On by default where the device
    /// allows it; settable (`--alias-operands true|false`) before the model's buffers are made.
    pub alias_operands: bool,
}

/// Storage buffers at least this large are aliased where [`Gpu::alias_operands`] is on: their memory is
/// allocated in whole 32 KiB texture rows, so smaller ones would waste more than they could save (the
/// texture form takes operands far larger than this).
pub const ALIAS_MIN_BYTES: u64 = 64 << 10;

/// Widths [`Gpu::row_lanes`] may take: a power of two from 2 to 64 (the reductions' trees have 64 slots).
pub fn row_lanes_ok(n: u32) -> bool {
    n.is_power_of_two() && (2..=64).contains(&n)
}

impl Gpu {
    /// The texture for operand `slot` (0: A, 1: B) of a launch that copies `texels` texels into it:
    /// [`crate::gpu::pipeline::TEX_WIDTH`] wide, its height the next power of two of the rows needed;
    /// None where that passes the device's texture limit.
    pub fn operand_texture(&self, slot: u8, texels: usize) -> Option<crate::gpu::pipeline::OperandTexture> {
        let width = crate::gpu::pipeline::TEX_WIDTH as usize;
        let rows = texels.div_ceil(width).max(1).next_power_of_two();
        if rows > self.limits.max_texture_dimension_2d as usize || width > self.limits.max_texture_dimension_2d as usize
        {
            return None;
        }
        let mut pool = self.operand_textures.lock().unwrap();
        let t = pool.entry((slot, rows as u32)).or_insert_with(|| {
            let texture = self.device.create_texture(&wgpu::TextureDescriptor {
                label: Some("matmul operand"),
                size: wgpu::Extent3d { width: width as u32, height: rows as u32, depth_or_array_layers: 1 },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba32Float,
                usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            });
            let view = texture.create_view(&Default::default());
            Arc::new((texture, view))
        });
        Some(t.clone())
    }

    /// The first `texels` texels of `view` as operand `slot` of a launch: through its buffer's aliased
    /// texture where it has one ([`Gpu::alias_texture`]: no copy), else copied into the pooled operand
    /// texture ([`Gpu::operand_texture`]) by the returned fill, recorded before the launch. With the
    /// texel at which they start; None where neither fits.
    pub fn texture_operand(
        &self,
        slot: u8,
        view: &View,
        texels: usize,
    ) -> Option<(crate::gpu::pipeline::OperandTexture, u32, Option<crate::gpu::pipeline::TexFill>)> {
        if let Some((t, base)) = self.alias_texture(view, texels) {
            return Some((t, base, None));
        }
        let t = self.operand_texture(slot, texels)?;
        let fill = crate::gpu::pipeline::TexFill {
            buffer: view.buffer.clone(),
            offset: view.offset,
            texels: texels as u32,
            texture: t.clone(),
        };
        Some((t, 0, Some(fill)))
    }

    /// The aliased texture over the first `texels` texels of `view` and the texel they start at, where
    /// its buffer is aliased ([`Gpu::alias_operands`]) and they lie whole in one of its windows.
    pub fn alias_texture(&self, view: &View, texels: usize) -> Option<(crate::gpu::pipeline::OperandTexture, u32)> {
        let aliasing = self.aliasing.as_ref().filter(|_| self.alias_operands)?;
        aliasing.texture(&self.device, view.buffer, view.offset, texels as u64 * 16)
    }

    /// GPU memory the device's allocator holds: (bytes in live allocations, bytes of the memory blocks
    /// reserved for them), where the backend reports it (Vulkan and DX12 do); with the aliased buffers'
    /// memory (src/gpu/alias.rs), which we allocate ourselves, in both.
    pub fn memory_report(&self) -> Option<(u64, u64)> {
        let ours = self.aliasing.as_ref().map_or(0, |a| a.bytes());
        self.device.generate_allocator_report().map(|r| (r.total_allocated_bytes + ours, r.total_reserved_bytes + ours))
    }

    /// Opens the adapter chosen by `opts` with the limits the crate needs (the adapter's own limits
    /// for buffer sizes, so that a model's needs can be checked against them), and settles the matmul
    /// kernel: the one `opts` forces, else the cached or freshly timed choice for this adapter.
    pub fn new(opts: &GpuOptions) -> Result<Gpu> {
        let adapter = choose_adapter(opts)?;
        let mut gpu = Self::from_adapter(adapter)?;
        // Before the matmul timing, which times the subgroup kernel as it will run.
        match opts.wide_loads {
            Some(true) if !gpu.int64 => tracing::warn!(
                "wide loads need 64-bit integers in shaders (SHADER_INT64), which {} lacks: off",
                gpu.summary.name
            ),
            Some(w) => gpu.wide_loads = w,
            None => {}
        }
        match opts.tex_operands.or(opts.wide_loads) {
            Some(true) if !gpu.int64 => tracing::warn!(
                "texture operands need 64-bit integers in shaders (SHADER_INT64), which {} lacks: off",
                gpu.summary.name
            ),
            Some(t) => gpu.tex_operands = t,
            None => {}
        }
        match opts.alias_operands {
            Some(true) if gpu.aliasing.is_none() => tracing::warn!(
                "aliased operand textures need lavapipe (Vulkan, driver llvmpipe), which {} is not: off",
                gpu.summary.name
            ),
            Some(a) => gpu.alias_operands = a,
            None => {}
        }
        gpu.matmul = match opts.matmul {
            MatmulKernel::Auto => crate::kernels::tune::choose_matmul(&gpu)?,
            MatmulKernel::Subgroup if !gpu.subgroups => {
                tracing::warn!(
                    "matmul kernel subgroup needs subgroups of 8+ lanes, which {} lacks: using register",
                    gpu.summary.name
                );
                MatmulKernel::Register
            }
            forced => forced,
        };
        tracing::info!("matmul kernel: {}", gpu.matmul);
        // Before the conv timing, which times the weight gradients as they will run.
        if let Some(s) = opts.split_k {
            gpu.split_k = s;
        }
        if let Some(n) = opts.row_lanes {
            gpu.row_lanes = n;
        }
        gpu.conv = match opts.conv {
            ConvKernel::Auto => crate::kernels::tune::choose_conv(&gpu)?,
            forced => forced,
        };
        tracing::info!("conv kernel: {}", gpu.conv);
        Ok(gpu)
    }

    pub fn from_adapter(adapter: wgpu::Adapter) -> Result<Gpu> {
        let info = adapter.get_info();
        let summary = AdapterSummary::of(&info);
        let have = adapter.limits();
        let mut limits = wgpu::Limits::downlevel_defaults();
        limits.max_storage_buffers_per_shader_stage = have.max_storage_buffers_per_shader_stage.min(8);
        limits.max_storage_buffer_binding_size = have.max_storage_buffer_binding_size;
        limits.max_buffer_size = have.max_buffer_size;
        limits.max_compute_workgroups_per_dimension = have.max_compute_workgroups_per_dimension;
        limits.max_compute_invocations_per_workgroup = have.max_compute_invocations_per_workgroup.min(256);
        limits.max_compute_workgroup_size_x = have.max_compute_workgroup_size_x.min(256);
        limits.max_compute_workgroup_storage_size = have.max_compute_workgroup_storage_size.min(16384);
        limits.min_storage_buffer_offset_alignment = have.min_storage_buffer_offset_alignment;
        limits.min_uniform_buffer_offset_alignment = have.min_uniform_buffer_offset_alignment;
        if limits.max_storage_buffers_per_shader_stage < 8 {
            return Err(GpuError::Limit {
                adapter: summary.name.clone(),
                limit: "max_storage_buffers_per_shader_stage",
                have: have.max_storage_buffers_per_shader_stage as u64,
                need: 8,
            });
        }
        // Subgroups for matmul_sg, where every subgroup has at least the 8 lanes it broadcasts from.
        let subgroups = adapter.features().contains(wgpu::Features::SUBGROUP) && info.subgroup_min_size >= 8;
        // 64-bit integers for the 64-bit accesses (Gpu::wide_loads), wherever the adapter has them.
        let int64 = adapter.features().contains(wgpu::Features::SHADER_INT64);
        let mut features = wgpu::Features::empty();
        features.set(wgpu::Features::SUBGROUP, subgroups);
        features.set(wgpu::Features::SHADER_INT64, int64);
        let desc = wgpu::DeviceDescriptor {
            label: Some("vaegpu"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| GpuError::RequestDevice { adapter: summary.name.clone(), message: e.to_string() })?;
        let errors: Arc<Mutex<Vec<GpuError>>> = Arc::default();
        {
            let errors = errors.clone();
            let name = summary.name.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                let err = match e {
                    wgpu::Error::OutOfMemory { .. } => {
                        GpuError::OutOfMemory { adapter: name.clone(), message: e.to_string() }
                    }
                    wgpu::Error::Validation { description, .. } => {
                        GpuError::Validation { adapter: name.clone(), message: description }
                    }
                    wgpu::Error::Internal { description, .. } => {
                        GpuError::Internal { adapter: name.clone(), message: description }
                    }
                };
                tracing::error!("{err}");
                errors.lock().unwrap().push(err);
            }));
        }
        {
            let errors = errors.clone();
            let name = summary.name.clone();
            device.set_device_lost_callback(move |reason, message| {
                if reason != wgpu::DeviceLostReason::Destroyed {
                    errors.lock().unwrap().push(GpuError::DeviceLost {
                        adapter: name.clone(),
                        message: format!("{reason:?}: {message}"),
                    });
                }
            });
        }
        tracing::info!("adapter: {summary}");
        // Until `new` times them: the register matmul and the conv's matmul forms on CPU adapters, the
        // tiled matmul and the gather conv elsewhere.
        let cpu = info.device_type == wgpu::DeviceType::Cpu;
        let aliasing = if int64 && cpu { alias::Aliasing::new(&adapter, &device) } else { None };
        let matmul = if cpu { MatmulKernel::Register } else { MatmulKernel::Tiled };
        let conv = if cpu { ConvKernel::Matmul } else { ConvKernel::Gather };
        Ok(Gpu {
            adapter,
            device,
            queue,
            summary,
            limits,
            errors,
            pipelines: PipelineCache::default(),
            matmul,
            conv,
            subgroups,
            int64,
            wide_loads: int64 && cpu,
            tex_operands: int64 && cpu,
            operand_textures: Mutex::default(),
            alias_operands: aliasing.is_some(),
            aliasing,
            split_k: !cpu,
            row_lanes: if cpu { 8 } else { 64 },
        })
    }

    /// Checks what a model needs against this device's limits, naming the limit and the shortfall.
    pub fn check_needs(&self, needs: &Needs) -> Result<()> {
        let l = &self.limits;
        let checks: [(&'static str, u64, u64); 3] = [
            ("max_buffer_size", l.max_buffer_size, needs.max_buffer_bytes),
            ("max_storage_buffer_binding_size", l.max_storage_buffer_binding_size, needs.max_binding_bytes),
            (
                "max_storage_buffers_per_shader_stage",
                l.max_storage_buffers_per_shader_stage as u64,
                needs.max_storage_buffers_per_stage as u64,
            ),
        ];
        for (limit, have, need) in checks {
            if need > have {
                return Err(GpuError::Limit { adapter: self.summary.name.clone(), limit, have, need });
            }
        }
        Ok(())
    }

    /// Checks that buffers of these sizes (bytes), each bound whole, fit this device (with the 8 storage
    /// bindings per stage every kernel stays within).
    pub fn check_buffers(&self, bytes: impl IntoIterator<Item = u64>) -> Result<()> {
        let largest = bytes.into_iter().max().unwrap_or(0);
        self.check_needs(&Needs {
            max_buffer_bytes: largest,
            max_binding_bytes: largest,
            max_storage_buffers_per_stage: 8,
        })
    }

    /// Returns the first error the device reported since the last check, if any.
    pub fn check(&self) -> Result<()> {
        let mut errs = self.errors.lock().unwrap();
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.remove(0))
        }
    }

    /// The matmul kernels this device can run: register and tiled everywhere, subgroup where
    /// [`Gpu::subgroups`].
    pub fn matmul_kernels(&self) -> Vec<MatmulKernel> {
        let mut k = vec![MatmulKernel::Register];
        if self.subgroups {
            k.push(MatmulKernel::Subgroup);
        }
        k.push(MatmulKernel::Tiled);
        k
    }

    pub fn is_cpu(&self) -> bool {
        self.adapter.get_info().device_type == wgpu::DeviceType::Cpu
    }

    /// Alignment (bytes) of storage-buffer binding offsets.
    pub fn storage_align(&self) -> u64 {
        self.limits.min_storage_buffer_offset_alignment as u64
    }

    pub fn storage(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        let bytes = bytes.max(4).next_multiple_of(4);
        if let Some(aliasing) = self.aliasing.as_ref().filter(|_| self.alias_operands && bytes >= ALIAS_MIN_BYTES) {
            if let Some(b) = aliasing.storage(&self.device, label, bytes) {
                return b;
            }
        }
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    pub fn storage_f32(&self, label: &str, len: usize) -> wgpu::Buffer {
        self.storage(label, (len * 4) as u64)
    }

    pub fn upload<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        let buf = self.storage(label, std::mem::size_of_val(data) as u64);
        self.write(&buf, 0, data);
        buf
    }

    pub fn write<T: bytemuck::Pod>(&self, buf: &wgpu::Buffer, offset: u64, data: &[T]) {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        if bytes.len() % 4 == 0 {
            self.queue.write_buffer(buf, offset, bytes);
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().next_multiple_of(4), 0);
            self.queue.write_buffer(buf, offset, &padded);
        }
    }

    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, data: &T) -> wgpu::Buffer {
        let bytes = bytemuck::bytes_of(data);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.len().next_multiple_of(16) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buf, 0, bytes);
        buf
    }

    /// Blocks until all submitted work is done, then reports any captured error.
    pub fn sync(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::DeviceLost { adapter: self.summary.name.clone(), message: e.to_string() })?;
        self.check()
    }

    /// Copies `len` elements at element offset `offset` of `buf` back to the host (blocking).
    pub fn read<T: bytemuck::Pod>(&self, buf: &wgpu::Buffer, offset: usize, len: usize) -> Result<Vec<T>> {
        let esize = std::mem::size_of::<T>();
        let bytes = ((len * esize) as u64).next_multiple_of(4);
        let label = "buffer".to_string();
        if len == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        enc.copy_buffer_to_buffer(buf, (offset * esize) as u64, &staging, 0, bytes);
        self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.sync()?;
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(GpuError::Readback { label, message: e.to_string() }),
            Err(e) => return Err(GpuError::Readback { label, message: e.to_string() }),
        }
        let view = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| GpuError::Readback { label: label.clone(), message: e.to_string() })?;
        let mut out = vec![T::zeroed(); len];
        bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(&view[..len * esize]);
        drop(view);
        staging.unmap();
        Ok(out)
    }

    pub fn read_f32(&self, buf: &wgpu::Buffer) -> Result<Vec<f32>> {
        self.read(buf, 0, (buf.size() / 4) as usize)
    }
}

/// A byte range of a buffer that a kernel binds.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub buffer: &'a wgpu::Buffer,
    /// Offset in bytes (a multiple of the storage offset alignment).
    pub offset: u64,
    /// Number of f32/u32 elements.
    pub len: usize,
}

impl<'a> View<'a> {
    pub fn whole(buffer: &'a wgpu::Buffer) -> Self {
        View { buffer, offset: 0, len: (buffer.size() / 4) as usize }
    }
    pub fn new(buffer: &'a wgpu::Buffer, offset: u64, len: usize) -> Self {
        View { buffer, offset, len }
    }
    pub fn binding(&self) -> wgpu::BindingResource<'a> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: self.buffer,
            offset: self.offset,
            size: std::num::NonZeroU64::new((self.len.max(1) * 4) as u64),
        })
    }
}

impl<'a> From<&'a wgpu::Buffer> for View<'a> {
    fn from(b: &'a wgpu::Buffer) -> Self {
        View::whole(b)
    }
}
