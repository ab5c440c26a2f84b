// detailclip.ts: the DetailCLIP model (docs/model.md): a masked student ViT, an EMA teacher ViT whose CLS attention
// chooses which patches the student sees, a CLIP text tower, an MAE-style one-block pixel decoder and a shared-
// weight iBOT head for student and teacher. Members are registered in the official order, so state-dict keys and
// order equal the official checkpoint's. The training forward follows docs/model.md#training-forward step by step, with
// the decisions of docs/parity.md#deviations-from-the-official-code (no in-place CLS overwrite, any grid and cell size,
// mask ratio 0 without a crash).
import { Block, LayerNorm, Linear, ModuleList } from "../nn/mod.ts";
import { activeCheckpoints } from "../nn/checkpoint.ts";
import { cat, emaUpdate_, noGrad, Tensor } from "../torch/mod.ts";
import type { DetailClipConfig } from "./configs.ts";
import { restoreSequence, sincosPosEmbed2d } from "./decoder.ts";
import { IBOTHead } from "./heads.ts";
import { selectTokens } from "./token_selection.ts";
import { CLIP } from "./clip.ts";
import { encodeText, TextTransformer } from "./text.ts";
import { MaskVisionTransformer } from "./vit.ts";

/** Everything one training forward produces; B = batch, L = patches, K = iBOT prototypes, R = removed patches. */
export interface DetailClipOutputs {
  /** (B, L) teacher CLS attention to the patches (mean over layers and heads). */
  attnU: Tensor;
  attnV: Tensor;
  /** (B, L) bool, true = removed from the student. */
  maskU: Tensor;
  maskV: Tensor;
  /** (B, E) CLIP image embeddings of the masked views; (B, E) text embedding. */
  imageEmbedU: Tensor;
  imageEmbedV: Tensor;
  textEmbed: Tensor;
  /** exp(logit_scale), 0-d. */
  logitScale: Tensor;
  /** (2B, K) and (2B, L, K), ordered [u-batch; v-batch]. */
  teacherCls: Tensor;
  teacherPatch: Tensor;
  studentCls: Tensor;
  /** (2B, L, K) when the full student patch head was evaluated, else (2B, R, K) at `removedIds`. */
  studentPatch: Tensor;
  /** (2B, R) patch indices of the rows of studentPatch, or null when studentPatch covers every patch. */
  removedIds: Tensor | null;
  /** (B, L, P·P·3) pixel predictions of each view. */
  reconstructionU: Tensor;
  reconstructionV: Tensor;
}

/** The student CLIP (visual, transformer, embeddings, projections, logit_scale) comes from CLIP, registered first. */
export class DetailCLIP extends CLIP {
  declare readonly config: DetailClipConfig;
  readonly gridSize: number;
  // EMA teacher (docs/model.md#ema-teacher): token/positional embeddings and ln_final are shared with the student.
  readonly visual_ema: MaskVisionTransformer;
  readonly transformer_e: TextTransformer;
  readonly image_projection_e: Tensor;
  readonly text_projection_e: Tensor;
  // Pixel decoder.
  readonly decoder_embed: Linear;
  readonly mask_token: Tensor; // (1, 1, D)
  readonly decoder_pos_embed: Tensor; // (1, 1+L, D), fixed
  readonly decoder_blocks: ModuleList<Block>;
  readonly decoder_norm: LayerNorm;
  readonly reconstruction_pred: Linear;
  // iBOT heads.
  readonly ibot_head: IBOTHead;
  readonly ibot_head_e: IBOTHead;

  constructor(config: DetailClipConfig) {
    super(config); // the student CLIP, initialised
    const { vision, text, embedDim, decoder, ibot } = config;
    this.gridSize = vision.imageSize / vision.patchSize;
    const patchDim = vision.patchSize * vision.patchSize * 3;

    this.visual_ema = this.module("visual_ema", new MaskVisionTransformer(vision));
    this.transformer_e = this.module("transformer_e", new TextTransformer(text));
    this.image_projection_e = this.parameter("image_projection_e", Tensor.empty([vision.width, embedDim]), false);
    this.text_projection_e = this.parameter("text_projection_e", Tensor.empty([text.width, embedDim]), false);

    this.decoder_embed = this.module("decoder_embed", new Linear(vision.width, vision.width));
    this.mask_token = this.parameter("mask_token", Tensor.empty([1, 1, vision.width]));
    const table = sincosPosEmbed2d(vision.width, this.gridSize);
    const positions = Tensor.fromArray(table, [1, 1 + this.gridSize * this.gridSize, vision.width]);
    this.decoder_pos_embed = this.parameter("decoder_pos_embed", positions, false);
    const blocks = Array.from(
      { length: decoder.depth },
      () => new Block(vision.width, decoder.heads, { mlpRatio: decoder.mlpRatio, eps: 1e-6 }),
    );
    this.decoder_blocks = this.module("decoder_blocks", new ModuleList(blocks));
    this.decoder_norm = this.module("decoder_norm", new LayerNorm(vision.width, { eps: 1e-6 }));
    this.reconstruction_pred = this.module("reconstruction_pred", new Linear(vision.width, patchDim));

    const head = {
      inDim: vision.width,
      outDim: ibot.outDim,
      hiddenDim: ibot.hiddenDim,
      bottleneckDim: ibot.bottleneckDim,
    };
    this.ibot_head = this.module("ibot_head", new IBOTHead(head));
    this.ibot_head_e = this.module("ibot_head_e", new IBOTHead(head));

    this.#initialize();
  }

  /** Decoder init (docs/model.md#decoder-and-pixel-reconstruction), then the teacher as an exact frozen copy. */
  #initialize(): void {
    noGrad(() => {
      // MAE decoder: xavier weights; decoder_embed keeps its default bias, the block biases are zero.
      this.decoder_embed.weight.xavierUniform_();
      this.mask_token.normal_(0, 0.02);
      for (const block of this.decoder_blocks) {
        for (const [name, p] of block.namedParameters()) {
          if (name.startsWith("norm")) continue;
          if (name.endsWith("weight")) p.xavierUniform_();
          else p.zero_();
        }
      }
    });
    this.#copyStudentToTeacher();
  }

  /** The teacher parts (docs/model.md#ema-teacher) paired with their student sources, in the same order. */
  emaPairs(): { teacher: Tensor[]; student: Tensor[] } {
    const teacher = [
      ...this.visual_ema.parameters(),
      ...this.transformer_e.parameters(),
      ...this.ibot_head_e.parameters(),
      this.image_projection_e,
      this.text_projection_e,
    ];
    const student = [
      ...this.visual.parameters(),
      ...this.transformer.parameters(),
      ...this.ibot_head.parameters(),
      this.image_projection,
      this.text_projection,
    ];
    if (teacher.length !== student.length) {
      throw new Error(`EMA pairs: ${teacher.length} teacher tensors but ${student.length} student tensors`);
    }
    return { teacher, student };
  }

  #copyStudentToTeacher(): void {
    const { teacher, student } = this.emaPairs();
    noGrad(() => {
      for (let i = 0; i < teacher.length; i++) teacher[i].copy_(student[i]);
    });
    for (const t of teacher) t.requiresGrad_(false);
  }

  /** θ_teacher ← m·θ_teacher + (1−m)·θ_student over exactly the docs/model.md#ema-teacher parts (one foreach call). */
  updateTeacher(momentum: number): void {
    const { teacher, student } = this.emaPairs();
    emaUpdate_(teacher, student, momentum);
  }

  /** (B, context) int64 token ids -> (B, E); the EMA variant swaps in transformer_e and text_projection_e. */
  override encodeText(tokens: Tensor, options: { ema?: boolean } = {}): Tensor {
    const ema = options.ema ?? false;
    if (!ema) return super.encodeText(tokens);
    return encodeText({
      tokenEmbedding: this.token_embedding,
      positionalEmbedding: this.positional_embedding,
      transformer: this.transformer_e,
      lnFinal: this.ln_final,
      projection: this.text_projection_e,
      mask: this.textMask,
    }, tokens);
  }

  /** (B, 3, H, W) -> (B, E) from the CLS token over all patches (no removal), student or EMA. */
  override encodeImage(images: Tensor, options: { ema?: boolean } = {}): Tensor {
    const ema = options.ema ?? false;
    if (!ema) return super.encodeImage(images);
    const { tokens } = this.visual_ema.forwardFeatures(images, {}); // (B, 1+L, D)
    return tokens.select(1, 0).matmul(this.image_projection_e); // (B, E)
  }

  /** MAE decoder: (B, 1+K, D) encoder tokens and (B, L) idsRestore -> (B, 1+L, D) after decoder_norm. */
  forwardDecoder(latent: Tensor, idsRestore: Tensor): Tensor {
    let x = this.decoder_embed.forward(latent); // (B, 1+K, D)
    x = restoreSequence(x, this.mask_token, idsRestore); // (B, 1+L, D)
    x = x.add(this.decoder_pos_embed);
    const checkpoints = activeCheckpoints(); // --grad-checkpointing (src/nn/checkpoint.ts)
    if (checkpoints !== null) x = checkpoints.sequential(x, [...this.decoder_blocks].map((b) => (h) => b.forward(h)));
    else for (const block of this.decoder_blocks) x = block.forward(x);
    return this.decoder_norm.forward(x); // (B, 1+L, D)
  }

  /**
   * The training forward of docs/model.md#training-forward on two views u, v: (B, 3, H, W) and captions text: (B, T),
   * with the EMA update at `momentum` first (null skips it: later micro-batches of an accumulated step keep the same
   * teacher). fullStudentPatch evaluates the student iBOT head on every patch (as the official code does); otherwise
   * only at the removed patches, which is all the patch loss reads
   * (docs/parity.md#student-patch-head-at-removed-positions).
   */
  forwardTrain(
    u: Tensor,
    v: Tensor,
    text: Tensor,
    momentum: number | null,
    options: { fullStudentPatch?: boolean } = {},
  ): DetailClipOutputs {
    const batch = u.size(0);
    const { maskRatio, maskCell } = this.config;

    // 1. Teacher: EMA update, then both views un-masked with their CLS attention, then the teacher head.
    const teacher = noGrad(() => {
      if (momentum !== null) this.updateTeacher(momentum);
      const teacherU = this.visual_ema.forwardFeatures(u, { collectClsAttention: true }); // (B, 1+L, D), (B, L)
      const teacherV = this.visual_ema.forwardFeatures(v, { collectClsAttention: true });
      const logits = this.ibot_head_e.forward(cat([teacherU.tokens, teacherV.tokens], 0)); // (2B, 1+L, K)
      return {
        attnU: teacherU.clsAttention!,
        attnV: teacherV.clsAttention!,
        cls: logits.select(1, 0), // (2B, K)
        patch: logits.slice(1, 1), // (2B, L, K)
      };
    });

    // 2. Masks from the teacher attention: the top int(cells·ratio)+1 cells are kept.
    const grid = { gridH: this.gridSize, gridW: this.gridSize, cell: maskCell, ratio: maskRatio };
    const selectionU = selectTokens(teacher.attnU, grid);
    const selectionV = selectTokens(teacher.attnV, grid);

    // 3. Student encoder on the kept tokens; the CLIP image embedding comes from the masked view's CLS.
    // With mask ratio 0 the student sees every token (the official gate), and the decoder gets the full sequence.
    const removeTokens = this.training && maskRatio > 0;
    const latentU = this.visual.forwardFeatures(u, { keep: removeTokens ? selectionU.idsKeep : undefined }).tokens;
    const latentV = this.visual.forwardFeatures(v, { keep: removeTokens ? selectionV.idsKeep : undefined }).tokens;
    const imageEmbedU = latentU.select(1, 0).matmul(this.image_projection); // (B, E)
    const imageEmbedV = latentV.select(1, 0).matmul(this.image_projection); // (B, E)

    // 4. Decoder and pixel predictions.
    const restoreU = removeTokens ? selectionU.idsRestore : identityRestore(batch, this.gridSize ** 2);
    const restoreV = removeTokens ? selectionV.idsRestore : identityRestore(batch, this.gridSize ** 2);
    const decodedU = this.forwardDecoder(latentU, restoreU); // (B, 1+L, D)
    const decodedV = this.forwardDecoder(latentV, restoreV); // (B, 1+L, D)
    const reconstructionU = this.reconstruction_pred.forward(decodedU.slice(1, 1)); // (B, L, P·P·3)
    const reconstructionV = this.reconstruction_pred.forward(decodedV.slice(1, 1)); // (B, L, P·P·3)

    // 5–6. Student iBOT head: the encoder CLS (not the decoder's) and the decoder's patch tokens
    // (docs/parity.md#cls-overwrite).
    const studentCls = this.ibot_head.forward(cat([latentU.select(1, 0), latentV.select(1, 0)], 0)); // (2B, K)
    const decodedPatches = cat([decodedU.slice(1, 1), decodedV.slice(1, 1)], 0); // (2B, L, D)
    let studentPatch: Tensor;
    let removedIds: Tensor | null = null;
    if (options.fullStudentPatch) {
      studentPatch = this.ibot_head.forward(decodedPatches); // (2B, L, K)
    } else {
      removedIds = cat([removedPatchIds(selectionU), removedPatchIds(selectionV)], 0); // (2B, R)
      const dim = decodedPatches.size(2);
      const index = removedIds.unsqueeze(-1).expand([2 * batch, removedIds.size(1), dim]); // (2B, R, D)
      studentPatch = this.ibot_head.forward(decodedPatches.gather(1, index)); // (2B, R, K)
    }

    // 7. Text, with the student tower.
    const textEmbed = this.encodeText(text); // (B, E)

    return {
      attnU: teacher.attnU,
      attnV: teacher.attnV,
      maskU: selectionU.mask,
      maskV: selectionV.mask,
      imageEmbedU,
      imageEmbedV,
      textEmbed,
      logitScale: this.logit_scale.exp(),
      teacherCls: teacher.cls,
      teacherPatch: teacher.patch,
      studentCls,
      studentPatch,
      removedIds,
      reconstructionU,
      reconstructionV,
    };
  }
}

/** (B, R) indices of the removed patches in raster order: the tail of the [kept, removed] shuffle. */
function removedPatchIds(selection: { idsKeep: Tensor; idsRestore: Tensor }): Tensor {
  const shuffle = selection.idsRestore.argsort(1, { stable: true }); // (B, L): kept ascending, then removed ascending
  return shuffle.slice(1, selection.idsKeep.size(1)); // (B, R)
}

/** ids_restore of a sequence nothing was removed from: (B, L) = 0..L-1 per row. */
function identityRestore(batch: number, length: number): Tensor {
  return Tensor.arange(0, length).unsqueeze(0).expand([batch, length]);
}
