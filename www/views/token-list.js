// <token-list>: how the text was cut into tokens: one box per token with its id, special tokens
// (<|im_start|>, <|im_end|>) and the chat roles (ChatML) marked, prompt and generated apart.

import { showToken } from '../heatmap.js';
import { empty, make } from './teach-dom.js';

const ROLES = new Set(['system', 'user', 'assistant']);

export class TokenList extends HTMLElement {
  connectedCallback() {
    if (!this.childElementCount) empty(this, 'Generate to see how the prompt was cut into tokens.');
  }

  /** seq: {ids, labels, special}; promptLength: how many are the prompt. */
  show(seq, promptLength) {
    this.sequence = seq;
    if (!seq || !seq.ids.length) return empty(this, 'Generate to see how the prompt was cut into tokens.');
    const list = make('ol', 'token-list');
    list.setAttribute('aria-label', 'tokens with their ids');
    let role = null;
    let specials = 0;
    const roleTokens = new Map(); // index → role name, for the tokens that spell a role
    seq.labels.forEach((label, i) => {
      if (label !== '<|im_start|>') return;
      let name = '';
      let j = i + 1;
      while (j < seq.labels.length && j < i + 4 && !seq.labels[j].includes('\n') && !seq.special[j]) name += seq.labels[j++];
      if (ROLES.has(name.trim())) for (let k = i + 1; k < j; k++) roleTokens.set(k, name.trim());
    });
    seq.ids.forEach((id, i) => {
      const label = seq.labels[i];
      const li = make('li', 'chip');
      const special = seq.special[i];
      if (special) {
        specials += 1;
        li.classList.add('special');
        if (label === '<|im_end|>') role = null;
      }
      // ChatML: <|im_start|> ROLE ↵ …text… <|im_end|>; a role can take two tokens ("ass", "istant").
      const isRole = roleTokens.has(i);
      if (isRole) {
        role = roleTokens.get(i);
        li.classList.add('role');
      }
      if (role && !special) li.dataset.role = role;
      if (i >= promptLength) li.classList.add('generated');
      li.append(make('span', 'chip-text', showToken(label)), make('span', 'chip-id', String(id)));
      const kind = special ? 'special token' : isRole ? `chat role “${role}”` : i >= promptLength ? 'generated' : 'prompt';
      li.setAttribute('aria-label', `token ${i}: ${showToken(label)}, id ${id}, ${kind}${role && !special && !isRole ? `, in the ${role} turn` : ''}`);
      list.append(li);
    });
    const lead = make('p', 'teach-lead', `${seq.ids.length} tokens: ${promptLength} read from the prompt (${specials} special), ${seq.ids.length - promptLength} generated. Each box is one token; the number under it is its id in the 49,152-token vocabulary. · marks a space, ↵ a newline.`);
    const key = make('p', 'hint token-key');
    key.append(make('span', 'chip special', 'special'), ' ', make('span', 'chip role', 'role'), ' ', make('span', 'chip', 'prompt'), ' ', make('span', 'chip generated', 'generated'));
    this.replaceChildren(lead, key, list);
  }
}

customElements.define('token-list', TokenList);
