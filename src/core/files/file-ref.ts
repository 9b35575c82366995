/** The FileRef union of the seeds: a Files-API id, an http(s) URL, or a data URL. */
import { Type, type Static } from 'typebox';
import { component } from '../schema.js';

export const FileIDRef = component(
  'FileIDRef',
  Type.Object(
    {
      type: Type.Optional(Type.Literal('file_id', { title: 'Type', default: 'file_id' })),
      file_id: Type.String({ minLength: 1, title: 'File Id' }),
    },
    {
      title: 'FileIDRef',
      examples: [{ file_id: 'file_0123456789abcdef0123456789abcdef', type: 'file_id' }],
    },
  ),
);

export const FileURLRef = component(
  'FileURLRef',
  Type.Object(
    {
      type: Type.Optional(Type.Literal('url', { title: 'Type', default: 'url' })),
      url: Type.String({ minLength: 1, title: 'Url' }),
    },
    { title: 'FileURLRef', examples: [{ type: 'url', url: 'https://example.com/input.png' }] },
  ),
);

export const FileDataURLRef = component(
  'FileDataURLRef',
  Type.Object(
    {
      type: Type.Optional(Type.Literal('data_url', { title: 'Type', default: 'data_url' })),
      data_url: Type.String({ minLength: 1, title: 'Data Url' }),
    },
    {
      title: 'FileDataURLRef',
      examples: [{ data_url: 'data:image/png;base64,iVBORw0KGgo...', type: 'data_url' }],
    },
  ),
);

export const FileRef = component(
  'FileRef',
  // oneOf (not TypeBox's anyOf) as in the seed; each branch's `type` const keeps them disjoint.
  Type.Unsafe<Static<typeof FileIDRef> | Static<typeof FileURLRef> | Static<typeof FileDataURLRef>>({
    oneOf: [FileIDRef, FileURLRef, FileDataURLRef],
    discriminator: {
      propertyName: 'type',
      mapping: {
        data_url: '#/components/schemas/FileDataURLRef',
        file_id: '#/components/schemas/FileIDRef',
        url: '#/components/schemas/FileURLRef',
      },
    },
  }),
);

/**
 * What validation lets through. `type` is optional in the seed's branches (it has a default), so
 * a ref may arrive without it; the resolver then goes by which field is present.
 */
export interface FileRefValue {
  type?: 'file_id' | 'url' | 'data_url';
  file_id?: string;
  url?: string;
  data_url?: string;
}

export type FileRefStatic = Static<typeof FileRef>;
